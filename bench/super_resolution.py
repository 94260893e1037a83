"""Throughput of the super-resolution study on this machine's CPU.

    python bench/super_resolution.py [--events 2000] [--threads 2] [--batch-size 32] [--steps 20]
                                     [--workdir DIR] [--skip-memory]

The settings are the repository's config.yaml (read through resolve_config): the
``pflow`` and ``pi0`` guns and the ``super_resolution`` section; only the events per shard
(``--events``, one shard of each sample) and, if given, the training batch size change.

1. Images with the study's detector: one shard of each sample generated and built
   (``super_resolution.detector.build_shard``), events/s per core (one process, NumPy
   single-threaded), for orientation.
2. The loader with the model removed: one pass of the training loader
   (``SuperResolutionDataModule`` over both files, no workers), events/s.
3. Training throughput of ``redistribute`` and ``cnn`` with the config's network settings:
   forward, MSE, backward, Adam step on real batches, ``--threads`` torch threads, the
   first (warm-up) step excluded; and inference throughput (forward only, no gradients) of
   both networks and of the interpolations; events/s. Target: the loader >= 10x the fastest
   model's training.
4. Peak memory of a loader pass over both files and over files of their events repeated ten
   times, each in a fresh process (VmHWM): about equal if the loader streams.

Everything is written under ``--workdir`` (default: a temporary directory, removed after).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from particle_flow import ROOT, stream_in_child, timed, write_repeated  # noqa: E402  (the particle-flow benchmark's helpers)

SAMPLES = ("pflow", "pi0")


def bench_config(events: int, batch_size: int | None) -> dict:
    """The repository's config with one shard of ``events`` events of each of the study's
    samples (and the study's training batch size, if given), validated."""
    import yaml

    from pipeline.run_config import resolve_config

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    for sample in SAMPLES:
        raw["samples"][sample].update(events_per_shard=events, shards=1)
    if batch_size is not None:
        raw.setdefault("super_resolution", {}).setdefault("training", {})["batch_size"] = batch_size
    return resolve_config(raw, source=str(ROOT / "config.yaml"))


def loader_pass(paths: list[Path], batch_size: int) -> tuple[int, float]:
    """Events read by one pass of the training loader over ``paths`` (no workers), and the seconds taken."""
    from pipeline.studies.super_resolution.data import SuperResolutionDataModule

    data = SuperResolutionDataModule({"train": paths, "val": paths}, batch_size, num_workers=0, seed=1)
    data.setup()
    events = 0
    start = time.perf_counter()
    for batch in data.train_dataloader():
        events += len(batch["track"])
    return events, time.perf_counter() - start


def network_throughput(config: dict, method: str, paths: list[Path], batch_size: int, steps: int,
                       contiguous: bool = False) -> dict:
    """{train, infer: events/s, parameters} of ``method`` on the files' first batches
    (cycled): ``steps`` training steps (forward, the training loss, backward, Adam) after a warm-up
    step, then ``steps`` forward passes without gradients."""
    import torch

    from pipeline.ml.memory_format import channels_last
    from pipeline.ml.trainer import study_training_config
    from pipeline.studies.super_resolution.batches import fine_mean_squares
    from pipeline.studies.super_resolution.data import SuperResolutionDataset
    from pipeline.studies.super_resolution.models import fine_loss
    from pipeline.studies.super_resolution.train import build_model

    config = study_training_config(config, "super_resolution")
    torch.manual_seed(0)
    datasets = [SuperResolutionDataset(path, batch_size) for path in paths]
    model = build_model(config, method, fine_mean_squares(paths, len(datasets[0].shapes), datasets[0].fine).tolist())
    if not contiguous:  # as in training and evaluation (pipeline.ml.memory_format)
        channels_last(model)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config["training"]["learning_rate"])
    batches = [datasets[index % 2][(index // 2) % len(datasets[index % 2])] for index in range(steps + 1)]
    events, elapsed = 0, 0.0
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        optimiser.zero_grad()
        loss = fine_loss(model(batch["coarse"], batch["track"]), batch["fine"], model.loss_scales)
        loss.backward()
        optimiser.step()
        if index:  # the first step warms up
            elapsed += time.perf_counter() - start
            events += len(batch["track"])
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches[1:]:
            model(batch["coarse"], batch["track"])
    return {"train": events / elapsed, "infer": events / (time.perf_counter() - start),
            "parameters": sum(p.numel() for p in model.parameters())}


def interpolation_throughput(method: str, paths: list[Path], batch_size: int, steps: int) -> float:
    """Events/s of an interpolation (``super_resolve``) on the files' first batches."""
    from pipeline.studies.super_resolution.data import SuperResolutionDataset
    from pipeline.studies.super_resolution.interpolation import super_resolve

    datasets = [SuperResolutionDataset(path, batch_size) for path in paths]
    batches = [datasets[index % 2][(index // 2) % len(datasets[index % 2])] for index in range(steps)]
    start = time.perf_counter()
    for batch in batches:
        super_resolve(method, batch["coarse"], datasets[0].factors)
    return sum(len(b["track"]) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per sample (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the networks (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the config's)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per network (default 20)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary dir)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
    parser.add_argument("--contiguous", action="store_true",
                        help="keep the weights NCHW (the layout before pipeline.ml.memory_format)")
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    args = parser.parse_args()
    from pipeline.allocator import retain_freed_memory

    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()

    from pipeline.simulation.gun import generate_gun_shard
    from pipeline.studies.super_resolution.detector import build_shard
    from pipeline.studies.super_resolution.methods import INTERPOLATIONS, LEARNED

    config = bench_config(args.events, args.batch_size)
    batch_size = args.batch_size or config["super_resolution"]["training"].get("batch_size",
                                                                                config["training"]["batch_size"])
    context = tempfile.TemporaryDirectory() if args.workdir is None else nullcontext(str(args.workdir))
    with context as workdir:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        paths = []
        for sample in SAMPLES:
            generated, images = workdir / f"{sample}_gen.h5", workdir / f"{sample}_images.h5"
            _, gen_wall, gen_cpu = timed(generate_gun_shard, config, sample, 0, generated, progress=False)
            _, img_wall, img_cpu = timed(build_shard, config, generated, images, progress=False)
            paths.append(images)
            print(f"{sample}: {args.events} events: gun {args.events / gen_cpu:.0f} events/s per core "
                  f"({gen_wall:.1f} s wall), images {args.events / img_cpu:.0f} events/s per core "
                  f"({img_wall:.1f} s wall), {images.stat().st_size / args.events / 1e3:.1f} kB/event")

        events, seconds = loader_pass(paths, batch_size)
        loader = events / seconds
        print(f"loader (no model): {events} events in {seconds:.2f} s: {loader:.0f} events/s, batch {batch_size}")

        import torch

        torch.set_num_threads(args.threads)
        speeds = {}
        for method in INTERPOLATIONS:
            print(f"{method}: inference {interpolation_throughput(method, paths, batch_size, args.steps):.0f} events/s")
        for method in LEARNED:
            speeds[method] = network_throughput(config, method, paths, batch_size, args.steps, args.contiguous)
            s = speeds[method]
            print(f"{method}: {s['parameters']} parameters; training {s['train']:.1f} events/s, "
                  f"inference {s['infer']:.1f} events/s ({args.threads} threads, batch {batch_size})")
        fastest = max(s["train"] for s in speeds.values())
        print(f"loader / fastest training: {loader / fastest:.1f}x (target >= 10x)")

        if not args.skip_memory:
            large = [workdir / f"{sample}_images_10x.h5" for sample in SAMPLES]
            n_large = sum(write_repeated(source, path, 10) for source, path in zip(paths, large))
            small_mb, _, n_small, _ = stream_in_child(paths, batch_size, "super_resolution")
            large_mb, _, _, _ = stream_in_child(large, batch_size, "super_resolution")
            print(f"peak memory of a loader pass (fresh process): {small_mb:.0f} MB over {n_small} events, "
                  f"{large_mb:.0f} MB over {n_large} ({large_mb / small_mb:.2f}x, target ~1)")


if __name__ == "__main__":
    main()
