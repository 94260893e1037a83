"""Flavour-tagger throughput on this machine's CPU.

    python bench/flavour_tagging.py [--threads 2] [--jets 50000] [--workers 0] [--skip-memory]

A synthetic track_graphs file (2-15 tracks per jet, as bench/vertexing.py writes it) is
scored by the baseline vertex finder into a vertex_edges file, then:
1. data loading throughput with the model removed: the DataModule's graph batches
   (track graphs plus edge scores, turned into PyG's sparse form) per second;
2. training throughput of the default tagger (forward, weighted cross-entropy,
   backward, Adam step) on those batches;
3. peak memory of a full pass of the training loader over that file and over one with 10x
   the jets (scored the same way), each in a fresh process: flat if the loader streams.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from particle_flow import stream_in_child  # noqa: E402  (a loader pass's peak memory in a fresh process)
from vertexing import write_file  # noqa: E402  (the same synthetic jets as the vertexing bench)

from pipeline.allocator import retain_freed_memory  # noqa: E402
from pipeline.run_config import resolve_config  # noqa: E402
from pipeline.studies.flavour_tagging.data import FlavourDataModule  # noqa: E402
from pipeline.studies.flavour_tagging.edges import score_edges  # noqa: E402
from pipeline.studies.flavour_tagging.models import FlavourTagger  # noqa: E402
from pipeline.studies.vertexing.formats import TRACK_FEATURES  # noqa: E402
from pipeline.tiny import tiny_config  # noqa: E402


def loader_pass(files: list[str | Path], batch_size: int, workers: int = 0) -> tuple[int, float]:
    """Jets read by one pass of the training loader over ``files`` (a track_graphs file and its
    vertex_edges file), and the seconds taken."""
    data = FlavourDataModule({"train": files[0]}, {"train": files[1]}, batch_size, workers)
    data.setup()
    jets = 0
    start = time.perf_counter()
    for batch in data.train_dataloader():
        jets += len(batch["label"])
    return jets, time.perf_counter() - start


def scored_file(directory: Path, jets: int) -> tuple[Path, Path]:
    """A synthetic track_graphs file of ``jets`` jets and its baseline vertex_edges file."""
    graphs, edges = directory / f"graphs_{jets}.h5", directory / f"edges_{jets}.h5"
    write_file(graphs, jets)
    score_edges(resolve_config(tiny_config()), "baseline", {"train": graphs}, {"train": edges})
    return graphs, edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jets", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batches", type=int, default=60, help="training batches to time")
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()
    config = resolve_config(tiny_config())
    settings = config["training"]
    study = config["flavour_tagging"]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        graphs, edges = scored_file(Path(tmp), args.jets)
        print(f"{args.jets} synthetic jets (2-15 tracks) and their baseline edge scores written in "
              f"{time.perf_counter() - t0:.1f} s")

        jets, seconds = loader_pass([graphs, edges], settings["batch_size"], args.workers)
        loading = jets / seconds
        data = FlavourDataModule({"train": graphs}, {"train": edges}, settings["batch_size"], args.workers)
        data.setup()

        torch.manual_seed(0)
        model = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                              learning_rate=settings["learning_rate"], lr_schedule=settings["lr_schedule"])
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        jets, elapsed = 0, 0.0
        for index, batch in enumerate(data.train_dataloader()):
            if index == args.batches + 2:
                break
            start = time.perf_counter()
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
            loss.backward()
            optimiser.step()
            if index >= 2:  # two warm-up steps
                elapsed += time.perf_counter() - start
                jets += len(batch["label"])
        training = jets / elapsed
        print(f"tagger: {sum(p.numel() for p in model.parameters())} parameters (width {study['width']}, "
              f"{study['message_layers']} message-passing layers), batch {settings['batch_size']}, "
              f"{args.threads} threads")
        print(f"training: {training:.0f} jets/s")
        print(f"data loading (model removed, {args.workers} workers): {loading:.0f} jets/s, "
              f"{loading / training:.1f}x the training rate")
        if not args.skip_memory:
            peaks = [stream_in_child([graphs, edges], settings["batch_size"], "flavour_tagging")[0],
                     stream_in_child(list(scored_file(Path(tmp), 10 * args.jets)), settings["batch_size"],
                                     "flavour_tagging")[0]]
            print(f"peak memory of a loader pass: {peaks[0]:.0f} MB over {args.jets} jets, "
                  f"{peaks[1]:.0f} MB over {10 * args.jets} ({peaks[1] - peaks[0]:+.0f} MB)")


if __name__ == "__main__":
    main()
