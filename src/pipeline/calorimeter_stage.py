"""The calorimeter as a workflow stage: a particle_jets shard to a calorimeter_cells file.

Reads the event's stored visible particles (the sample must set ``particles.store``),
simulates the calorimeter (``pipeline.calorimeter``) in chunks of events and writes the
zero-suppressed cells per event. Reruns without Pythia: its seed is derived from the
global seed, the sample and the shard.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.calorimeter import EVENTS_PER_CHUNK as SIMULATION_CHUNK
from pipeline.calorimeter import CalorimeterGeometry, deposit_particles
from pipeline.config import config_hash, derive_seed, stage_config
from pipeline.formats import CALORIMETER_CELLS, PARTICLE_JETS
from pipeline.h5io import RaggedReader, RaggedWriter, parent_index, provenance_attrs

log = logging.getLogger(__name__)

#: Events read and simulated at once: a multiple of the model's own chunk, so the random
#: stream (hence the output) does not depend on it.
EVENTS_PER_READ = 8 * SIMULATION_CHUNK


def simulate_calorimeter(config: Mapping, input_path: str | Path, output: str | Path,
                         progress: bool = True) -> int:
    """Simulate the calorimeter for every event of a particle_jets file; write a
    calorimeter_cells file. Returns the number of cells written."""
    from tqdm import tqdm

    geometry = CalorimeterGeometry.from_settings(config["calorimeter"])
    with RaggedReader(input_path, PARTICLE_JETS) as reader:
        attrs = reader.attrs
        sample, shard = str(attrs["sample"]), int(attrs["shard"])
        if not reader.config["samples"][sample]["particles"]["store"]:
            raise ValueError(f"{input_path}: sample {sample!r} was generated without its particles; set "
                             f"samples.{sample}.particles.store: true to simulate its calorimeter")
        seed = derive_seed(config["seed"], sample, shard, "calorimeter")
        rng = np.random.Generator(np.random.PCG64(seed))
        stage = stage_config(config, sample, "calorimeter")
        out_attrs = provenance_attrs(stage, config_hash(stage), seed)
        out_attrs.update(sample=sample, shard=shard, generator_seed=int(attrs["seed"]),
                         generator_config_hash=attrs["config_hash"],
                         layers=",".join(layer.name for layer in geometry.layers))
        n_events = reader.n_rows("events")
        n_cells = 0
        with RaggedWriter(output, CALORIMETER_CELLS, out_attrs) as writer:
            for start in tqdm(range(0, n_events, EVENTS_PER_READ), desc=f"calorimeter {sample}/{shard}",
                              disable=not progress, mininterval=5.0):
                stop = min(start + EVENTS_PER_READ, n_events)
                particles, offsets = reader.read_children("particles", start, stop)
                cells = deposit_particles(geometry, particles, parent_index(offsets), stop - start, rng)
                writer.append(
                    {"events": {"event": reader.read("events", ["event"], start, stop)["event"]},
                     "cells": {k: cells[k] for k in CALORIMETER_CELLS.collection("cells").field_names()}},
                    {"cells": np.bincount(cells["event"], minlength=stop - start)},
                )
                n_cells += len(cells["energy"])
    log.info("calorimeter: %d cells in %d events of %s shard %d", n_cells, n_events, sample, shard)
    return n_cells
