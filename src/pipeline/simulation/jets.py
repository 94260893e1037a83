"""Particle-level jets: the visible final state of a batch of events clustered with FastJet,
all events at once through its multi-event awkward interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import awkward as ak
import fastjet
import numpy as np

from pipeline.io.hdf5 import ragged_rows
from pipeline.simulation.kinematics import four_vector_kinematics
from pipeline.simulation.record import EventRecord, visible_final_state

#: FastJet's name of each ``jets.algorithm`` of the config.
_ALGORITHMS = {"antikt": "antikt_algorithm", "kt": "kt_algorithm", "cambridge": "cambridge_algorithm"}


@dataclass
class ClusteredJets:
    """Jets of a batch, flat and ordered by event then decreasing pT: pT and mass in GeV,
    phi in rad."""

    event: np.ndarray  # (n_jets,) event within the batch
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    constituent_offsets: np.ndarray  # (n_jets + 1,)
    constituents: np.ndarray  # global particle indices


def cluster_jets(rec: EventRecord, jets_cfg: Mapping) -> ClusteredJets:
    """Cluster visible final-state particles with FastJet, all events of the batch at once."""
    visible = np.flatnonzero(visible_final_state(rec))
    per_event = np.bincount(rec.event[visible], minlength=rec.n_events)
    particles = ak.unflatten(
        ak.zip(
            {"px": rec.px[visible], "py": rec.py[visible], "pz": rec.pz[visible],
             "E": rec.e[visible], "index": visible},
            with_name="Momentum4D",
        ),
        per_event,
    )
    jetdef = fastjet.JetDefinition(getattr(fastjet, _ALGORITHMS[jets_cfg["algorithm"]]), jets_cfg["radius"])
    sequence = fastjet.ClusterSequence(particles, jetdef)
    jets = sequence.inclusive_jets(min_pt=jets_cfg["min_pt"])
    constituents = sequence.constituents(min_pt=jets_cfg["min_pt"])

    n_jets = ak.to_numpy(ak.num(jets)).astype(np.int64)
    event = np.repeat(np.arange(rec.n_events), n_jets)
    pt, eta, phi, mass = four_vector_kinematics(
        *(ak.to_numpy(ak.flatten(jets[c])) for c in ("px", "py", "pz", "E"))
    )
    n_const = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2))).astype(np.int64)
    const_index = ak.to_numpy(ak.flatten(constituents["index"], axis=None)).astype(np.int64)

    # FastJet returns jets unsorted: order by event, then decreasing pT; apply the |eta|
    # and upper pT cuts.
    keep = np.abs(eta) < jets_cfg["max_abs_eta"]
    if jets_cfg["max_pt"] >= 0:
        keep &= pt < jets_cfg["max_pt"]
    order = np.lexsort((-pt, event))
    order = order[keep[order]]
    offsets = np.concatenate([[0], np.cumsum(n_const)])
    rows = ragged_rows(offsets, order)
    return ClusteredJets(
        event=event[order],
        pt=pt[order],
        eta=eta[order],
        phi=phi[order],
        mass=mass[order],
        constituent_offsets=np.concatenate([[0], np.cumsum(n_const[order])]),
        constituents=const_index[rows],
    )
