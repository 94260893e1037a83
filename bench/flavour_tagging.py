"""Flavour-tagger throughput on this machine's CPU.

    python bench/flavour_tagging.py [--threads 2] [--jets 50000] [--workers 0]

A synthetic track_graphs file (2-15 tracks per jet, as bench/vertexing.py writes it) is
scored by the baseline vertex finder into a vertex_edges file, then:
1. data loading throughput with the model removed: the DataModule's graph batches
   (track graphs plus edge scores, turned into PyG's sparse form) per second;
2. training throughput of the default tagger (forward, weighted cross-entropy,
   backward, Adam step) on those batches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vertexing import write_file  # noqa: E402  (the same synthetic jets as the vertexing bench)

from pipeline.allocator import retain_freed_memory  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.studies.flavour_tagging.data import FlavourDataModule  # noqa: E402
from pipeline.studies.flavour_tagging.edges import score_edges  # noqa: E402
from pipeline.studies.flavour_tagging.models import FlavourTagger  # noqa: E402
from pipeline.studies.vertexing.formats import TRACK_FEATURES  # noqa: E402
from pipeline.tiny import tiny_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jets", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batches", type=int, default=60, help="training batches to time")
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()
    config = validate_config(tiny_config())
    settings = config["training"]
    study = config["flavour_tagging"]

    with tempfile.TemporaryDirectory() as tmp:
        graphs, edges = Path(tmp) / "graphs.h5", Path(tmp) / "edges.h5"
        write_file(graphs, args.jets)
        t0 = time.perf_counter()
        score_edges(config, "baseline", {"train": graphs}, {"train": edges})
        print(f"{args.jets} synthetic jets (2-15 tracks); baseline edge scores written in "
              f"{time.perf_counter() - t0:.1f} s")

        data = FlavourDataModule({"train": graphs}, {"train": edges}, settings["batch_size"], args.workers)
        data.setup()
        jets = 0
        t0 = time.perf_counter()
        for batch in data.train_dataloader():
            jets += len(batch["label"])
        loading = jets / (time.perf_counter() - t0)

        torch.manual_seed(0)
        model = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"])
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


if __name__ == "__main__":
    main()
