"""Throughput and memory of the particle-flow study on this machine's CPU.

    python bench/particle_flow.py [--events 4000] [--threads 2] [--batch-size 64] [--steps 20]
                                  [--skip-memory] [--workdir DIR]

The settings are the repository's config.yaml (read through resolve_config): the
``pflow`` gun (pi+ and a pi0 next to it) and the ``particle_flow`` section; only the
events of the shard (``--events``) and, if given, the training batch size change.

1. Gun, calorimeter and images: one ``pflow`` shard of ``--events`` events is generated
   (``generate_gun_shard``: Pythia init, decays, HDF5) and its images built
   (``build_image_shard``: tracks, showers, noise, topo-clusters), each timed in wall and
   CPU time in this process (one process = one core; NumPy single-threaded). Quoted in
   events/s per core for the gun, the images and both together.
2. The loader with the model removed: one pass of the training loader (the batches of
   ``ParticleFlowBatches`` through ``ParticleFlowDataModule``, no workers) over the file,
   events/s.
3. Training throughput of ``cnn``, ``cnn_no_track`` and ``graph`` with the config's network
   settings (``build_model(study_training_config(config, "particle_flow"), method)``): forward, energy-weighted MSE,
   backward, Adam step on real batches of the file, ``--threads`` torch threads, the
   first (warm-up) step excluded; events/s. Target: the loader >= 10x the fastest model.
4. Peak memory of a loader pass over the file and over a 10x larger one (the same events
   repeated ten times), each in a fresh process: VmHWM of that process (not ru_maxrss,
   which Linux carries over from the parent across fork + exec). Target: the ratio of the
   two peaks about 1 (the loader streams).

Everything is written under ``--workdir`` (default: a temporary directory, removed after).
The default run takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cnn", "cnn_no_track", "graph")


def bench_config(events: int, batch_size: int | None) -> dict:
    """The repository's config with a one-shard ``pflow`` sample of ``events`` events (and
    the study's training batch size, if given), validated (defaults filled in)."""
    import yaml

    from pipeline.run_config import resolve_config

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["samples"]["pflow"].update(events_per_shard=events, shards=1)
    if batch_size is not None:
        raw.setdefault("particle_flow", {}).setdefault("training", {})["batch_size"] = batch_size
    return resolve_config(raw, source=str(ROOT / "config.yaml"))


def timed(function, *args, **kwargs) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def loader_pass(path: Path, batch_size: int) -> tuple[int, float]:
    """Events read by one pass of the training loader over ``path`` (no workers), and the seconds taken."""
    from pipeline.studies.particle_flow.data import ParticleFlowDataModule

    data = ParticleFlowDataModule({"train": path, "val": path}, batch_size, num_workers=0, seed=1)
    data.setup()
    events = 0
    start = time.perf_counter()
    for batch in data.train_dataloader():
        events += len(batch["track"])
    return events, time.perf_counter() - start


def stream_in_child(path: Path | list[Path], batch_size: int,
                    study: str = "particle_flow") -> tuple[float, float, int, float]:
    """(peak resident memory [MB], resident memory after the imports [MB], events, seconds)
    of a loader pass over ``path`` (one file, or a list) in a fresh process: ``loader_pass``
    of ``study``'s benchmark (bench/<study>.py) after importing the study's DataModule."""
    files = [str(p) for p in path] if isinstance(path, list) else str(path)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import pipeline.studies.{study}.data; from {study} import loader_pass; from particle_flow import vm; "
            f"base = vm('VmRSS'); events, seconds = loader_pass({files!r}, {batch_size}); "
            f"print(vm('VmHWM'), base, events, seconds)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_kb, base_kb, events, seconds = result.stdout.split()[-4:]
    return int(peak_kb) / 1024, int(base_kb) / 1024, int(events), float(seconds)


def vm(key: str) -> int:
    """This process's ``key`` line of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(key + ":")).split()[1])


def write_repeated(source: Path, path: Path, times: int) -> int:
    """A particle_flow_images file of ``source``'s events repeated ``times`` times (same
    attributes, so the same stored config and geometry); returns its events."""
    from pipeline.io.hdf5 import RaggedReader, RaggedWriter, read_tree, select_tree
    from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES

    with RaggedReader(source, PARTICLE_FLOW_IMAGES) as reader:
        attrs = {k: v for k, v in reader.attrs.items() if k not in ("schema", "schema_version")}
        n_events = reader.n_rows("events")
        arrays, offsets = read_tree(reader, 0, n_events)
    arrays, counts = select_tree(PARTICLE_FLOW_IMAGES, arrays, offsets, np.arange(n_events))
    with RaggedWriter(path, PARTICLE_FLOW_IMAGES, attrs) as writer:
        for _ in range(times):
            writer.append(arrays, counts)
    return times * n_events


def training_throughput(config: dict, method: str, path: Path, batch_size: int, steps: int,
                        contiguous: bool = False) -> tuple[float, int]:
    """(events/s, parameters) of ``steps`` training steps of ``method`` (forward, loss,
    backward, Adam) on the file's first batches (cycled), after one warm-up step; the
    weights channels-last as in training (``channels_last``) unless ``contiguous``."""
    import torch

    from pipeline.ml.memory_format import channels_last
    from pipeline.ml.trainer import study_training_config
    from pipeline.studies.particle_flow.data import ParticleFlowBatches
    from pipeline.studies.particle_flow.models import energy_weighted_mse
    from pipeline.studies.particle_flow.train import build_model

    config = study_training_config(config, "particle_flow")
    torch.manual_seed(0)
    model = build_model(config, method)
    if not contiguous:
        channels_last(model)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config["training"]["learning_rate"])
    dataset = ParticleFlowBatches(path, batch_size)
    batches = [dataset[index % len(dataset)] for index in range(steps + 1)]
    events, elapsed = 0, 0.0
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        optimiser.zero_grad()
        loss = energy_weighted_mse(model(batch["layers"], batch["track"]), batch["fraction"], batch["weight"])
        loss.backward()
        optimiser.step()
        if index:  # the first step warms up
            elapsed += time.perf_counter() - start
            events += len(batch["track"])
    return events / elapsed, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000, help="pflow events to generate (the N-event file)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="events per batch (default: the study's training batch size)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temporary dir)")
    parser.add_argument("--contiguous", action="store_true",
                        help="keep the weights NCHW (the layout before pipeline.ml.memory_format)")
    parser.add_argument("--unmap-freed", action="store_true",
                        help="glibc's default thresholds: freed tensors unmapped (before pipeline.allocator)")
    args = parser.parse_args()
    from pipeline.allocator import retain_freed_memory

    if not args.unmap_freed:  # as the pipeline command does for every step
        retain_freed_memory()
    if args.events < 1 or args.steps < 1:
        parser.error("--events and --steps must be at least 1")

    import torch

    from pipeline.ml.trainer import study_training_config
    from pipeline.simulation.gun import generate_gun_shard
    from pipeline.studies.particle_flow.images import build_image_shard

    config = bench_config(args.events, args.batch_size)
    batch_size = study_training_config(config, "particle_flow")["training"]["batch_size"]
    sample = config["particle_flow"]["sample"]
    rows: list[tuple[str, str, str]] = []  # (what, result, target) for the table

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() if args.workdir is None else nullcontext(args.workdir) as workdir:
        workdir = Path(workdir)
        generated, images = workdir / "gun.h5", workdir / "images.h5"
        steps, gun_wall, gun_cpu = timed(generate_gun_shard, config, sample, 0, generated, progress=False)
        _, image_wall, image_cpu = timed(build_image_shard, config, generated, images, progress=False)
        n = args.events
        print(f"{n} {sample} events (config.yaml's gun), one process:")
        for what, wall, cpu in (("gun", gun_wall, gun_cpu), ("images", image_wall, image_cpu),
                                ("both", gun_wall + image_wall, gun_cpu + image_cpu)):
            print(f"  {what + ':':8} {n / cpu:7.0f} events/s per core ({n / wall:.0f} events/s wall, "
                  f"{1e3 * cpu / n:.2f} ms CPU/event, CPU/wall {cpu / wall:.2f})")
            rows.append((f"{what} (gun + calorimeter + images)" if what == "both" else what,
                         f"{n / cpu:.0f} events/s per core", ""))
        print(f"  (the gun's time includes Pythia's init, {steps['init']:.2f} s wall)")

        torch.set_num_threads(args.threads)
        events, seconds = loader_pass(images, batch_size)
        loading = events / seconds
        print(f"loader (model removed, no workers), batch {batch_size}: {loading:.0f} events/s "
              f"({events} events in {seconds:.2f} s)")
        rows.append(("loader alone", f"{loading:.0f} events/s", ""))

        print(f"training (forward, loss, backward, Adam), batch {batch_size}, {args.threads} threads, "
              f"{args.steps} steps after one warm-up:")
        rates = {}
        for method in METHODS:
            rates[method], parameters = training_throughput(config, method, images, batch_size, args.steps,
                                                                 args.contiguous)
            print(f"  {method:13} {rates[method]:7.1f} events/s ({parameters} parameters)")
            rows.append((f"training {method}", f"{rates[method]:.1f} events/s", ""))
        fastest = max(rates, key=rates.get)
        ratio = loading / rates[fastest]
        print(f"loader / fastest model ({fastest}): {ratio:.1f}x (target >= 10)")
        rows.append((f"loader / {fastest}", f"{ratio:.1f}x", ">= 10"))

        if not args.skip_memory:
            large = workdir / "images_10x.h5"
            n_large = write_repeated(images, large, 10)
            small_mb, small_base, _, _ = stream_in_child(images, batch_size)
            large_mb, large_base, large_events, large_seconds = stream_in_child(large, batch_size)
            print("peak memory of a loader pass, each in a fresh process (VmHWM = resident after the imports + growth):")
            print(f"  {n:8d} events ({images.stat().st_size / 1e6:7.1f} MB file): {small_mb:6.0f} MB "
                  f"({small_base:.0f} MB + {small_mb - small_base:.0f} MB)")
            print(f"  {n_large:8d} events ({large.stat().st_size / 1e6:7.1f} MB file): {large_mb:6.0f} MB "
                  f"({large_base:.0f} MB + {large_mb - large_base:.0f} MB), at {large_events / large_seconds:.0f} "
                  f"events/s")
            print(f"  ratio {large_mb / small_mb:.2f} (target ~1)")
            rows.append((f"peak memory, {n} events", f"{small_mb:.0f} MB", ""))
            rows.append((f"peak memory, {n_large} events", f"{large_mb:.0f} MB", ""))
            rows.append(("peak memory 10x / 1x", f"{large_mb / small_mb:.2f}", "~1"))

    print("\nsummary")
    for what, result, target in rows:
        print(f"  {what:40} {result:24} {target}".rstrip())


if __name__ == "__main__":
    main()
