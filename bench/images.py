"""Throughput of the jet-image study on this machine's CPU.

    python bench/images.py [--events 1000] [--images 20000] [--threads 2] [--batches 40]

1. Calorimeter and image building, Pythia excluded: a boosted top shard is generated
   once (not timed), then the calorimeter stage (``pipeline simulate-calorimeter``) and
   the image stage (``pipeline jet_images build``) run on it in this process, on one
   core (NumPy is single-threaded here). Quoted in events/s and top jets/s per core.
2. A jet_images file of ``--images`` images is made from those real images (repeated,
   mirrored at random), then:
   a. data loading with the model removed: the training DataModule's batches
      (read, normalised) per second;
   b. training throughput of the default CNN tagger (forward, BCE, backward, Adam step);
   c. peak memory of a full pass of the loader over that file and over one 10x larger,
      each in a fresh process: flat if the loader streams.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def loader_pass(path: Path, pixels: int, batch_size: int) -> tuple[int, float]:
    """Images read by one pass of the training loader over ``path``, and the seconds taken."""
    from pipeline.studies.jet_images.data import JetImageDataModule

    data = JetImageDataModule({"train": path, "val": path}, pixels, batch_size, seed=1)
    data.setup()
    images = 0
    start = time.perf_counter()
    for batch in data.train_dataloader():
        images += len(batch["label"])
    return images, time.perf_counter() - start


def write_images(source: Path, path: Path, n_images: int, seed: int = 0) -> None:
    """A jet_images file of n_images rows: the source file's images repeated in a random
    order, each mirrored at random (so repeats are not identical)."""
    from pipeline.io.hdf5 import RaggedReader, RaggedWriter
    from pipeline.studies.jet_images.formats import jet_images_schema

    with RaggedReader(source, jet_images_schema()) as reader:
        rows = reader.read("jets")
        attrs = reader.attrs
    rng = np.random.default_rng(seed)
    with RaggedWriter(path, jet_images_schema(int(attrs["pixels"])), attrs) as writer:
        for start in range(0, n_images, 5000):
            pick = rng.integers(0, len(rows["label"]), min(5000, n_images - start))
            chunk = {k: v[pick] for k, v in rows.items()}
            chunk["label"] = rng.integers(0, 2, len(pick)).astype(np.int8)
            mirror = rng.random(len(pick)) < 0.5
            chunk["image"][mirror] = chunk["image"][mirror][:, ::-1]
            writer.append({"jets": chunk})


def peak_memory(path: Path, pixels: int, batch_size: int) -> float:
    """Peak resident memory [MB] of a fresh process making one loader pass over path."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from images import loader_pass; from pathlib import Path; "
            f"loader_pass(Path({str(path)!r}), {pixels}, {batch_size}); "
            f"print([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="top events for the calorimeter and images")
    parser.add_argument("--images", type=int, default=20_000, help="images in the loader and training file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--batches", type=int, default=40, help="training batches to time")
    parser.add_argument("--contiguous", action="store_true",
                        help="keep the weights NCHW (the layout before pipeline.ml.memory_format)")
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    args = parser.parse_args()
    from pipeline.allocator import retain_freed_memory

    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()

    import torch

    from pipeline.ml.memory_format import channels_last
    from pipeline.run_config import resolve_config
    from pipeline.simulation.calorimeter_stage import simulate_calorimeter
    from pipeline.simulation.generation import generate_shard
    from pipeline.studies.jet_images.preparation import build_jet_images
    from pipeline.studies.jet_images.train import build_model

    config = resolve_config({"seed": 1, "samples": {
        "top": {"process": "ttbar", "sqrt_s": 14000.0, "pthat_min": 500.0, "pthat_max": 700.0,
                "events_per_shard": args.events, "shards": 1,
                "pythia_settings": ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"],
                "jets": {"radius": 0.8, "min_pt": 550.0, "max_pt": 650.0, "max_abs_eta": 2.0},
                "particles": {"store": True}},
        "qcd": {"process": "qcd_dijet", "particles": {"store": True}}}})
    study, settings = config["jet_images"], config["training"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_shard(config, "top", 0, tmp / "gen.h5", progress=False)
        t0 = time.perf_counter()
        simulate_calorimeter(config, tmp / "gen.h5", tmp / "cells.h5", progress=False)
        t1 = time.perf_counter()
        jets = build_jet_images(config, tmp / "gen.h5", tmp / "cells.h5", tmp / "images.h5", progress=False)
        t2 = time.perf_counter()
        print(f"{args.events} top events (14 TeV, pT-hat 500-700 GeV), {jets} contained top jets, one core:")
        print(f"  calorimeter: {args.events / (t1 - t0):.0f} events/s ({1e3 * (t1 - t0) / args.events:.1f} ms/event)")
        print(f"  jet images:  {args.events / (t2 - t1):.0f} events/s, {jets / (t2 - t1):.0f} jets/s")
        print(f"  both:        {jets / (t2 - t0):.0f} jets/s per core")

        small, large = tmp / "small.h5", tmp / "large.h5"
        write_images(tmp / "images.h5", small, args.images)
        images, seconds = loader_pass(small, study["pixels"], settings["batch_size"])
        loading = images / seconds

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        model = build_model(config, "cnn")
        if not args.contiguous:  # as in training (pipeline.ml.memory_format)
            channels_last(model)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        from pipeline.studies.jet_images.data import JetImageDataModule

        data = JetImageDataModule({"train": small, "val": small}, study["pixels"], settings["batch_size"], seed=1)
        data.setup()
        trained, elapsed = 0, 0.0
        for index, batch in enumerate(data.train_dataloader()):
            if index == args.batches + 2:
                break
            start = time.perf_counter()
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["image"]), batch["label"])
            loss.backward()
            optimiser.step()
            if index >= 2:  # two warm-up steps
                elapsed += time.perf_counter() - start
                trained += len(batch["label"])
        training = trained / elapsed
        print(f"CNN tagger ({sum(p.numel() for p in model.parameters())} parameters, channels "
              f"{study['cnn']['channels']}), batch {settings['batch_size']}, {args.threads} threads:")
        print(f"  training: {training:.0f} images/s")
        print(f"  data loading (model removed): {loading:.0f} images/s, {loading / training:.1f}x the training rate")

        write_images(tmp / "images.h5", large, 10 * args.images, seed=1)
        small_mb = peak_memory(small, study["pixels"], settings["batch_size"])
        large_mb = peak_memory(large, study["pixels"], settings["batch_size"])
        print(f"  peak memory of a loader pass: {small_mb:.0f} MB over {args.images} images, "
              f"{large_mb:.0f} MB over {10 * args.images} ({large_mb - small_mb:+.0f} MB)")


if __name__ == "__main__":
    main()
