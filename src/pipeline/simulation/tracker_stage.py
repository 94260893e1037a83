"""The tracker as a workflow stage: a particle_jets shard to a track_jets file (the
physics is in ``pipeline.simulation.tracker``). Reruns without Pythia: its random stream
is derived from the global seed, the sample and the shard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import read_tree
from pipeline.simulation.formats import JETS, PARTICLE_JETS, TRACK_JETS
from pipeline.simulation.stage import ShardStage
from pipeline.simulation.tracker import simulate_tracks

log = logging.getLogger(__name__)

#: Events read and written per chunk; fixed so that the smearing stream is reproducible.
TRACKER = ShardStage("tracker", ("tracker",), TRACK_JETS, events_per_chunk=2000)


def track_shard(config: Mapping, input_path: str | Path, output: str | Path, progress: bool = True) -> int:
    """Run the tracker over a particle_jets file, writing a track_jets file. Returns n_jets."""

    def process(readers, start, stop, rng):
        particles, offsets = read_tree(readers["generated"], start, stop, ("events", "jets", "hadrons", "constituents"))
        arrays, counts = simulate_tracks(particles["constituents"], offsets["constituents"], config["tracker"], rng)
        arrays.update(events=particles["events"], jets={name: particles["jets"][name] for name in JETS.field_names()},
                      hadrons=particles["hadrons"])
        counts.update(jets=np.diff(offsets["jets"]), hadrons=np.diff(offsets["hadrons"]))
        return arrays, counts

    def generator_attrs(readers, sample):
        attrs = readers["generated"].attrs
        return {"pythia_version": attrs["pythia_version"], "generator_seed": int(attrs["seed"]),
                "generator_config_hash": attrs["config_hash"]}

    rows = TRACKER.run(config, {"generated": (input_path, PARTICLE_JETS)}, output, process, progress, generator_attrs)
    log.info("tracked %d jets of %s", rows["jets"], Path(input_path).name)
    return rows["jets"]
