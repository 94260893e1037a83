"""Pythia's event record as NumPy arrays: a batch of events flattened once (``EventRecord``),
the visible final state, and which decay made each particle's production vertex."""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

#: PDG ids of the neutrinos (any sign), which no detector sees.
NEUTRINOS = (12, 14, 16)

#: Two production points closer than this (mm) are the same point when tracing which
#: particle's decay made a vertex: strong and electromagnetic decays fly < 1e-7 mm,
#: weak decays of b, c, s hadrons and taus typically microns to metres.
SAME_POINT_TOLERANCE = 1e-4


@dataclass
class EventRecord:
    """A batch of Pythia events flattened into NumPy arrays (all particles, all events).

    Indices ``mother1`` and ``daughter1`` are global (into these arrays), -1 for none.
    Momenta in GeV, vertices in mm (times in mm/c).
    """

    start: np.ndarray  # (n_events + 1,) offsets of each event's particles
    event: np.ndarray  # (n,) event of each particle (0-based within the batch)
    pdgid: np.ndarray
    status: np.ndarray
    mother1: np.ndarray
    daughter1: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray
    vt: np.ndarray
    weight: np.ndarray  # (n_events,)

    @property
    def n_events(self) -> int:
        return len(self.start) - 1

    def local_index(self, idx: np.ndarray) -> np.ndarray:
        """Index within its event of each global particle index."""
        return idx - self.start[self.event[idx]]


def read_record(batch: ak.Array) -> EventRecord:
    """Flatten the awkward output of ``Pythia.nextBatch`` into an EventRecord."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt.id)).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(counts)])
    event = np.repeat(np.arange(len(counts)), counts)
    offset = start[event]

    def flat(array, fill=0.0):
        return ak.to_numpy(ak.fill_none(ak.flatten(array), fill))

    def pointer(local):
        local = flat(local).astype(np.int64)
        return np.where(local > 0, local + offset, -1)

    weights = ak.fill_none(ak.firsts(batch.info.weights), 1.0)
    return EventRecord(
        start=start,
        event=event,
        pdgid=flat(prt.id).astype(np.int32),
        status=flat(prt.status).astype(np.int32),
        mother1=pointer(prt.mother1),
        daughter1=pointer(prt.daughter1),
        px=flat(prt.p.px),
        py=flat(prt.p.py),
        pz=flat(prt.p.pz),
        e=flat(prt.p.e),
        vx=flat(prt.vProd.px),
        vy=flat(prt.vProd.py),
        vz=flat(prt.vProd.pz),
        vt=flat(prt.vProd.e),
        weight=ak.to_numpy(weights).astype(np.float64),
    )


def visible_final_state(rec: EventRecord) -> np.ndarray:
    """Mask of final-state particles a detector can see (everything but neutrinos)."""
    return (rec.status > 0) & ~np.isin(np.abs(rec.pdgid), NEUTRINOS)


def decay_parents(rec: EventRecord, particles: np.ndarray, tolerance: float = SAME_POINT_TOLERANCE) -> np.ndarray:
    """For the given global particle indices, the global index of the particle whose decay
    made each one's production vertex, or -1 for particles from the primary vertex.

    Walks up the mother chain while the mother was itself produced at the same point
    (a strong or electromagnetic decay), so pions from B -> D* -> D pi point to the B.
    """
    position = np.stack([rec.vx, rec.vy, rec.vz], axis=1)
    target = position[particles]
    parent = rec.mother1[particles]
    active = np.flatnonzero(parent >= 0)
    while len(active):
        same = np.sum((position[parent[active]] - target[active]) ** 2, axis=1) < tolerance**2
        active = active[same]
        parent[active] = rec.mother1[parent[active]]
        active = active[parent[active] >= 0]
    return parent
