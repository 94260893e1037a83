"""Pythia 8 event generation into particle_jets files, one shard at a time: each batch of
events is read into arrays (``record``), clustered into jets (``jets``), labelled with
its truth (``jet_truth``) and appended to the file.

The hot path is vectorised: Pythia's ``nextBatch`` returns an awkward array of many
events, which is flattened once into NumPy arrays (``EventRecord``); clustering uses
FastJet's multi-event awkward interface; everything after that is array arithmetic.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from pipeline.io.hdf5 import RaggedWriter
from pipeline.simulation.formats import PARTICLE_JETS
from pipeline.simulation.jet_truth import flavour_labels, top_containment
from pipeline.simulation.jets import cluster_jets
from pipeline.simulation.kinematics import four_vector_kinematics
from pipeline.simulation.pythia import ChargeTable
from pipeline.simulation.record import EventRecord, decay_parents, read_record, visible_final_state
from pipeline.simulation.shard_generator import ShardGenerator

log = logging.getLogger(__name__)


def particle_jet_arrays(
    rec: EventRecord,
    sample: Mapping,
    charges: ChargeTable,
    first_event: int,
) -> tuple[dict, dict]:
    """Everything the particle_jets file stores for one batch: (arrays, counts)."""
    jets = cluster_jets(rec, sample["jets"])
    matched, matched_flavour, matched_jet, jet_flavour = flavour_labels(
        rec, jets, sample["flavour"]["hadron_min_pt"], sample["flavour"]["match_dr"])

    c = jets.constituents
    parent = decay_parents(rec, c)
    has_parent = parent >= 0
    parent_local = np.where(has_parent, rec.local_index(np.maximum(parent, 0)), 0)
    parent_pdgid = np.where(has_parent, rec.pdgid[np.maximum(parent, 0)], 0)
    daughter = rec.daughter1[matched]

    pv = rec.start[:-1]  # particle 0 of each event (the system) sits at the primary vertex
    arrays = {
        "events": {
            "event": first_event + np.arange(rec.n_events),
            "pv_x": rec.vx[pv], "pv_y": rec.vy[pv], "pv_z": rec.vz[pv],
            "weight": rec.weight,
        },
        "jets": {"pt": jets.pt, "eta": jets.eta, "phi": jets.phi, "mass": jets.mass, "flavour": jet_flavour,
                 "top_contained": top_containment(rec, jets, sample["jets"]["radius"])},
        "hadrons": {
            "pdgid": rec.pdgid[matched], "flavour": matched_flavour,
            "px": rec.px[matched], "py": rec.py[matched], "pz": rec.pz[matched], "energy": rec.e[matched],
            "prod_x": rec.vx[matched], "prod_y": rec.vy[matched], "prod_z": rec.vz[matched],
            "decay_x": rec.vx[daughter], "decay_y": rec.vy[daughter], "decay_z": rec.vz[daughter],
            "index": rec.local_index(matched),
        },
        "constituents": {
            "px": rec.px[c], "py": rec.py[c], "pz": rec.pz[c], "energy": rec.e[c],
            "pdgid": rec.pdgid[c], "charge": charges(rec.pdgid[c]),
            "vx": rec.vx[c], "vy": rec.vy[c], "vz": rec.vz[c], "vt": rec.vt[c],
            "parent_index": parent_local, "parent_pdgid": parent_pdgid,
        },
    }
    visible = np.zeros(0, np.int64)
    if sample["particles"]["store"]:
        visible = np.flatnonzero(visible_final_state(rec))
        _, eta, _, _ = four_vector_kinematics(rec.px[visible], rec.py[visible], rec.pz[visible], rec.e[visible])
        visible = visible[np.abs(eta) < sample["particles"]["max_abs_eta"]]
    arrays["particles"] = {
        "px": rec.px[visible], "py": rec.py[visible], "pz": rec.pz[visible], "energy": rec.e[visible],
        "pdgid": rec.pdgid[visible], "charge": charges(rec.pdgid[visible]),
        "vx": rec.vx[visible], "vy": rec.vy[visible], "vz": rec.vz[visible],
    }
    counts = {
        "jets": np.bincount(jets.event, minlength=rec.n_events),
        "hadrons": np.bincount(matched_jet, minlength=len(jets.pt)),
        "constituents": np.diff(jets.constituent_offsets),
        "particles": np.bincount(rec.event[visible], minlength=rec.n_events),
    }
    return arrays, counts


def generate_shard(
    config: Mapping,
    sample_name: str,
    shard: int,
    output: str | Path,
    progress: bool = True,
) -> dict[str, float]:
    """Generate one shard of a sample into a particle_jets HDF5 file.

    Returns the wall time (s) spent per step: init (Pythia and file set-up), pythia
    (nextBatch), read, jets (clustering, labelling, truth), write.
    """
    started = time.perf_counter()
    generator = ShardGenerator.start(config, sample_name, shard)
    sample, pythia, charges = generator.sample, generator.pythia, generator.charges
    timing: dict[str, float] = defaultdict(float)
    n_total, batch_size = sample["events_per_shard"], sample["batch_size"]
    with RaggedWriter(output, PARTICLE_JETS, generator.attrs) as writer, tqdm(
        total=n_total, desc=f"generate {sample_name}/{shard}", unit="ev",
        disable=not progress, mininterval=5.0,
    ) as bar:
        timing["init"] = time.perf_counter() - started
        done = 0
        while done < n_total:
            n = min(batch_size, n_total - done)
            t0 = time.perf_counter()
            batch = pythia.nextBatch(n)
            t1 = time.perf_counter()
            rec = read_record(batch)
            t2 = time.perf_counter()
            arrays, counts = particle_jet_arrays(rec, sample, charges, done)
            t3 = time.perf_counter()
            writer.append(arrays, counts)
            t4 = time.perf_counter()
            for step, dt in zip(("pythia", "read", "jets", "write"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timing[step] += dt
            done += rec.n_events
            bar.update(rec.n_events)
        closing = time.perf_counter()
    timing["write"] += time.perf_counter() - closing  # the final flush and rename
    log.info("generated %d events of %s shard %d: %s", n_total, sample_name, shard,
             ", ".join(f"{k} {v:.2f}s" for k, v in timing.items()))
    return dict(timing)
