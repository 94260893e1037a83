"""Vertex-finding throughput and memory on this machine's CPU.

    python bench/vertexing.py [--threads 2] [--jets-10x 2000000]

1. Training throughput (forward, loss, backward, Adam step) of Set2Graph at the authors'
   size (EPJC: widths 256,256,256,256,5, edge MLP 256; about 457k parameters with their
   10 features) on jets of equal track count, batch 256, beside stored figures of the
   authors' published code measured earlier on this kind of machine (not run here;
   ``AUTHORS``, quoted in docs/benchmarks.md). Then the
   Track Pair (pair MLP 256, 256) and RNN (3 bidirectional GRUs of 128) finders the same way.
2. Data loading throughput with the model removed: the DataModule's batches per second
   from a track_graphs file (must be >= 10x the model's training throughput).
3. Memory while streaming a track_graphs file whose features are many times larger than
   the memory the stream uses: the file is written once (in chunks, by a child process)
   to a temporary directory, then read batch by batch while the resident memory is
   sampled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.allocator import retain_freed_memory
from pipeline.io.hdf5 import RaggedWriter
from pipeline.studies.vertexing.data import TrackGraphDataModule
from pipeline.studies.vertexing.formats import TRACK_FEATURES, TRACK_GRAPHS
from pipeline.studies.vertexing.models import VertexFinder, pair_targets, vertex_finding_loss

AUTHORS = {4: 4000, 6: 3000, 8: 2100, 12: 950, 15: 700}
EPJC_NETWORK = {"set_widths": [256, 256, 256, 256, 5], "edge_widths": [256], "pair_widths": [256, 256],
                "rnn_hidden": 128, "rnn_layers": 3}
#: The EPJC training settings (the bench steps its own Adam at this learning rate).
EPJC_TRAINING = {"learning_rate": 1e-3, "threshold": 0.5, "lr_schedule": "constant"}


def training_throughput(n_tracks: int, batch: int = 256, steps: int = 12, method: str = "set2graph") -> float:
    """Jets/s of ``steps`` training steps of ``method`` at the EPJC size on jets of ``n_tracks`` tracks."""
    torch.manual_seed(0)
    model = VertexFinder(method, len(TRACK_FEATURES), EPJC_NETWORK, **EPJC_TRAINING)
    optimiser = torch.optim.Adam(model.parameters(), lr=EPJC_TRAINING["learning_rate"])
    x = torch.randn(batch, n_tracks, len(TRACK_FEATURES))
    mask = torch.ones(batch, n_tracks, dtype=torch.bool)
    vertex = torch.randint(0, 3, (batch, n_tracks))
    target, pairs = pair_targets(vertex, mask)
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            start = time.perf_counter()
        optimiser.zero_grad()
        loss = vertex_finding_loss(model(x, mask), target, pairs)
        loss.backward()
        optimiser.step()
    return steps * batch / (time.perf_counter() - start)


def write_file(path: Path, n_jets: int, chunk: int = 200_000, seed: int = 0) -> None:
    """A synthetic track_graphs file: n_jets jets with 2-15 tracks, random features."""
    rng = np.random.default_rng(seed)
    with RaggedWriter(path, TRACK_GRAPHS, {"feature_mean": np.zeros(len(TRACK_FEATURES)),
                                           "feature_std": np.ones(len(TRACK_FEATURES))}) as writer:
        for start in range(0, n_jets, chunk):
            n = min(chunk, n_jets - start)
            counts = np.sort(rng.integers(2, 16, n))
            total = int(counts.sum())
            writer.append(
                {"jets": {"pt": rng.exponential(50, n), "eta": rng.normal(0, 1, n), "phi": rng.uniform(-3, 3, n),
                          "mass": rng.exponential(5, n), "flavour": rng.choice([0, 4, 5], n), "n_tracks": counts,
                          "source_jet": np.arange(start, start + n)},
                 "tracks": {"features": rng.normal(0, 1, (total, len(TRACK_FEATURES))).astype(np.float32),
                            "vertex": rng.integers(0, 3, total)}},
                {"tracks": counts},
            )


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jets-10x", type=int, default=2_000_000, help="jets in the large streaming file")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()

    model = VertexFinder("set2graph", len(TRACK_FEATURES), EPJC_NETWORK, **EPJC_TRAINING)
    print(f"Set2Graph, EPJC size: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(TRACK_FEATURES)} features per track, {args.threads} threads, batch 256")
    print("tracks  training jets/s  authors' code (stored)  ratio")
    rates = {}
    for n, theirs in AUTHORS.items():
        ours = rates[n] = training_throughput(n)
        print(f"{n:6d}  {ours:15.0f}  {theirs:23d}  {ours / theirs:5.2f}")
    # No stored figures of the authors' code for these two: compare with an earlier run of this script.
    print("\ntracks  training jets/s: track_pair   rnn (EPJC size, batch 256)")
    for n in AUTHORS:
        pair, rnn = (training_throughput(n, method=method) for method in ("track_pair", "rnn"))
        print(f"{n:6d}  {pair:28.0f}  {rnn:5.0f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.h5"
        t0 = time.perf_counter()
        # Written by a child process, so this process's memory reflects streaming only.
        writer = multiprocessing.get_context("spawn").Process(target=write_file, args=(path, args.jets_10x))
        writer.start()
        writer.join()
        size_mb = path.stat().st_size / 1e6
        print(f"\nstreaming file: {args.jets_10x} jets, {size_mb:.0f} MB on disk (gzip), "
              f"written in {time.perf_counter() - t0:.0f} s")
        data = TrackGraphDataModule({"train": path}, batch_size=256, num_workers=args.workers)
        data.setup()
        jets, tracks = 0, 0
        start_rss = current_rss_mb()
        highest = start_rss
        t0 = time.perf_counter()
        for index, batch in enumerate(data.train_dataloader()):
            jets += len(batch["n_tracks"])
            tracks += int(batch["n_tracks"].sum())
            if index % 50 == 0:
                highest = max(highest, current_rss_mb())
        elapsed = time.perf_counter() - t0
        in_memory_mb = tracks * len(TRACK_FEATURES) * 4 / 1e6
        print(f"data loading (model removed, {args.workers} workers): {jets / elapsed:.0f} jets/s, "
              f"{jets / elapsed / rates[6]:.1f}x Set2Graph's training rate at 6 tracks")
        print(f"memory while streaming: {start_rss:.0f} MB at the start, at most {highest:.0f} MB "
              f"(+{highest - start_rss:.0f} MB); the features alone are {in_memory_mb:.0f} MB, "
              f"{in_memory_mb / max(highest - start_rss, 1):.0f}x the growth")

if __name__ == "__main__":
    main()
