"""Throughput of the simulation stage on one core: Pythia alone vs. the whole stage.

    python bench/simulate.py [--events 1000] [--process ttbar]

Pythia alone is ``pythia.next()`` in a loop (no reading of the record). The whole stage
is what the workflow runs per shard: generation with ``nextBatch`` + reading the record
+ clustering and labelling + HDF5 writing (``pipeline generate``), then the tracker
(``pipeline simulate-tracker``). Target: everything we add costs under 25% of Pythia's
own time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.io.hdf5 import RaggedReader
from pipeline.run_config import resolve_config
from pipeline.seeds import derive_seed
from pipeline.simulation.formats import PARTICLE_JETS
from pipeline.simulation.generation import generate_shard
from pipeline.simulation.pythia import make_pythia, pythia_settings
from pipeline.simulation.tracker_stage import track_shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--process", default="ttbar")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    config = resolve_config({"seed": 1, "samples": {"bench": {
        "process": args.process, "events_per_shard": args.events, "shards": 1}}})
    sample = config["samples"]["bench"]

    t0 = time.perf_counter()
    pythia = make_pythia(pythia_settings(sample, derive_seed(1, "bench", 0, "pythia")))
    for _ in range(args.events):
        pythia.next()
    pythia_alone = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        generated, tracks = Path(tmp) / "generated.h5", Path(tmp) / "tracks.h5"
        t0 = time.perf_counter()
        steps = generate_shard(config, "bench", 0, generated, progress=False)
        t1 = time.perf_counter()
        track_shard(config, generated, tracks, progress=False)
        t2 = time.perf_counter()
        with RaggedReader(generated, PARTICLE_JETS) as reader:
            n_jets = reader.n_rows("jets")
            n_events = reader.n_rows("events")

    steps["tracker"] = t2 - t1
    whole = t2 - t0
    added = whole - pythia_alone
    per_event = 1e3 / n_events
    print(f"{args.process}: {n_events} events, {n_jets} jets ({n_jets / n_events:.2f} jets/event), one core")
    print(f"Pythia alone (init + next()): {pythia_alone * per_event:6.2f} ms/event  {n_jets / pythia_alone:8.1f} jets/s")
    print(f"whole stage:                 {whole * per_event:6.2f} ms/event  {n_jets / whole:8.1f} jets/s")
    print("time split of the whole stage (ms/event):")
    labels = {
        "init": "Pythia init, file set-up",
        "pythia": "Pythia nextBatch (generation + awkward conversion)",
        "read": "reading the record into NumPy",
        "jets": "clustering, flavour labels, vertex parents",
        "write": "HDF5 writing (particle_jets)",
        "tracker": "tracker stage (read, smear, truth vertices, write)",
    }
    for key, label in labels.items():
        print(f"  {label:52} {steps[key] * per_event:6.2f}")
    print(f"added by us (whole - Pythia alone): {added * per_event:.2f} ms/event = "
          f"{100 * added / pythia_alone:.1f}% of Pythia's own time (target < 25%)")


if __name__ == "__main__":
    main()
