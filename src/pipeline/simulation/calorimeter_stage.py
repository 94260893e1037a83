"""The calorimeter as a workflow stage: a particle_jets shard to a calorimeter_cells file.

Reads the event's stored visible particles (the sample must set ``particles.store``),
simulates the calorimeter (``pipeline.simulation.calorimeter``) in chunks of events and writes the
zero-suppressed cells per event. Reruns without Pythia: its seed is derived from the
global seed, the sample and the shard.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import parent_index
from pipeline.simulation.calorimeter import EVENTS_PER_CHUNK as SIMULATION_CHUNK
from pipeline.simulation.calorimeter import deposit_particles
from pipeline.simulation.calorimeter_geometry import CalorimeterGeometry
from pipeline.simulation.formats import CALORIMETER_CELLS, PARTICLE_JETS
from pipeline.simulation.stage import ShardStage

log = logging.getLogger(__name__)

#: Events read and simulated at once: a multiple of the model's own chunk, so the random
#: stream (hence the output) does not depend on it.
CALORIMETER = ShardStage("calorimeter", ("calorimeter",), CALORIMETER_CELLS, events_per_chunk=8 * SIMULATION_CHUNK)


def simulate_calorimeter(config: Mapping, input_path: str | Path, output: str | Path,
                         progress: bool = True) -> int:
    """Simulate the calorimeter for every event of a particle_jets file; write a
    calorimeter_cells file. Returns the number of cells written."""
    geometry = CalorimeterGeometry.from_settings(config["calorimeter"])
    cell_fields = CALORIMETER_CELLS.collection("cells").field_names()

    def process(readers, start, stop, rng):
        generated = readers["generated"]
        particles, offsets = generated.read_children("particles", start, stop)
        cells = deposit_particles(geometry, particles, parent_index(offsets), stop - start, rng)
        return ({"events": {"event": generated.read("events", ["event"], start, stop)["event"]},
                 "cells": {k: cells[k] for k in cell_fields}},
                {"cells": np.bincount(cells["event"], minlength=stop - start)})

    def generator_attrs(readers, sample):
        generated = readers["generated"]
        if not generated.config["samples"][sample]["particles"]["store"]:
            raise ValueError(f"{input_path}: sample {sample!r} was generated without its particles; set "
                             f"samples.{sample}.particles.store: true to simulate its calorimeter")
        return {"generator_seed": int(generated.attrs["seed"]), "generator_config_hash": generated.attrs["config_hash"],
                "layers": ",".join(layer.name for layer in geometry.layers)}

    rows = CALORIMETER.run(config, {"generated": (input_path, PARTICLE_JETS)}, output, process, progress,
                           generator_attrs)
    log.info("calorimeter: %d cells in %d events of %s", rows["cells"], rows["events"], Path(input_path).name)
    return rows["cells"]
