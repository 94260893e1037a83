"""Pythia 8 event generation, jet clustering and flavour labelling, one shard at a time.

The hot path is vectorised: Pythia's ``nextBatch`` returns an awkward array of many
events, which is flattened once into NumPy arrays (``EventRecord``); clustering uses
FastJet's multi-event awkward interface; everything after that is array arithmetic.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import awkward as ak
import numpy as np

from pipeline.config import config_hash, derive_seed, sample_config, stage_config
from pipeline.io.hdf5 import RaggedWriter, provenance_attrs, ragged_rows
from pipeline.simulation.formats import PARTICLE_JETS
from pipeline.simulation.kinematics import delta_r, four_vector_kinematics
from pipeline.simulation.pythia import make_pythia, pythia_settings, pythia_version

log = logging.getLogger(__name__)


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


def hadron_flavour(pdgid: np.ndarray) -> np.ndarray:
    """5 for b hadrons, 4 for c hadrons (without b), 0 otherwise; quarkonia count as 0."""
    a = np.abs(pdgid)
    code = a % 10000
    q1, q2, q3 = (code // 1000) % 10, (code // 100) % 10, (code // 10) % 10
    hadron = (q3 != 0) & (a < 1_000_000) & (a > 100)
    quarkonium = (q1 == 0) & (q2 == q3)
    has_b = hadron & ~quarkonium & ((q1 == 5) | (q2 == 5) | (q3 == 5))
    has_c = hadron & ~quarkonium & ((q1 == 4) | (q2 == 4) | (q3 == 4))
    return np.where(has_b, 5, np.where(has_c, 4, 0)).astype(np.int8)


def weak_heavy_hadrons(rec: EventRecord, min_pt: float) -> tuple[np.ndarray, np.ndarray]:
    """Global indices and flavours (5 or 4) of weakly decaying b and c hadrons above min_pt.

    A hadron decays weakly unless one of its daughters is a hadron of the same flavour
    made at the hadron's own production point (a strong or electromagnetic decay, so
    B* -> B gamma keeps only the B) or a copy of it (an oscillating B0 keeps only its
    final copy). A weak decay to the same flavour (B_c -> B_s X) keeps both.
    """
    flavour = hadron_flavour(rec.pdgid)
    heavy = np.flatnonzero(flavour > 0)
    same_flavour_child = np.zeros(len(flavour), bool)
    mothers = rec.mother1[heavy]
    ok = np.flatnonzero(mothers >= 0)
    child, mother = heavy[ok], mothers[ok]
    flight2 = (rec.vx[child] - rec.vx[mother]) ** 2 + (rec.vy[child] - rec.vy[mother]) ** 2 \
        + (rec.vz[child] - rec.vz[mother]) ** 2
    not_weak = (flavour[mother] == flavour[child]) & (
        (flight2 < SAME_POINT_TOLERANCE**2) | (np.abs(rec.pdgid[mother]) == np.abs(rec.pdgid[child]))
    )
    same_flavour_child[mother[not_weak]] = True
    pt = np.hypot(rec.px, rec.py)
    keep = heavy[~same_flavour_child[heavy] & (pt[heavy] > min_pt) & (rec.daughter1[heavy] >= 0)]
    return keep, flavour[keep]


def hadronic_top_partons(rec: EventRecord) -> tuple[np.ndarray, np.ndarray]:
    """The hadronically decaying top quarks of a batch and their decay partons.

    Returns (top, partons): global indices of each top's last copy (n_tops,) and of its
    b quark and the two quarks of its W decay (n_tops, 3). Leptonic tops are left out.
    Partons are taken where they are made (before showering), as in the landscape
    paper's matching.
    """
    a = np.abs(rec.pdgid)
    has_mother = rec.mother1 >= 0
    # The top's last copy is the one that decays (its first daughter is the W, not a top).
    top = np.flatnonzero((a == 6) & (rec.daughter1 >= 0))
    top = top[a[rec.daughter1[top]] != 6]
    is_last_top = np.zeros(len(a), bool)
    is_last_top[top] = True
    from_top = has_mother & is_last_top[np.maximum(rec.mother1, 0)]
    b = np.flatnonzero((a == 5) & from_top)
    w = np.flatnonzero((a == 24) & from_top)
    w_top = rec.mother1[w]
    # Follow each W through its recoil copies to the one that decays.
    active = np.flatnonzero(rec.daughter1[w] >= 0)
    while len(active):
        child = rec.daughter1[w[active]]
        copy = a[child] == 24
        w[active[copy]] = child[copy]
        active = active[copy]
        active = active[rec.daughter1[w[active]] >= 0]
    is_last_w = np.zeros(len(a), bool)
    is_last_w[w] = True
    quarks = np.flatnonzero((a >= 1) & (a <= 5) & has_mother & is_last_w[np.maximum(rec.mother1, 0)])
    # Per top: its b, and the quarks of its W (two for a hadronic decay).
    b_of_top = np.full(len(a), -1)
    b_of_top[rec.mother1[b]] = b
    top_of_w = np.full(len(a), -1)
    top_of_w[w] = w_top
    quark_top = top_of_w[rec.mother1[quarks]]
    order = np.argsort(quark_top, kind="stable")
    quark_top, quarks = quark_top[order], quarks[order]
    n_quarks = np.bincount(quark_top, minlength=len(a))
    hadronic = top[(b_of_top[top] >= 0) & (n_quarks[top] == 2)]
    first = np.searchsorted(quark_top, hadronic)
    partons = np.stack([b_of_top[hadronic], quarks[first], quarks[first + 1]], axis=1)
    return hadronic, partons.reshape(-1, 3).astype(np.int64)


def top_containment(rec: EventRecord, jets: "ClusteredJets", radius: float) -> np.ndarray:
    """(n_jets,) 1 where a hadronic top and its three decay partons all lie within
    ``radius`` (Delta R) of the jet axis, else 0."""
    top, partons = hadronic_top_partons(rec)
    contained = np.zeros(len(jets.pt), np.int8)
    if not len(top) or not len(jets.pt):
        return contained
    jet_offsets = np.concatenate([[0], np.cumsum(np.bincount(jets.event, minlength=rec.n_events))])
    top_event = rec.event[top]
    pair_top = np.repeat(np.arange(len(top)), jet_offsets[top_event + 1] - jet_offsets[top_event])
    pair_jet = ragged_rows(jet_offsets, top_event)
    inside = np.ones(len(pair_top), bool)
    for index in (top[pair_top], *partons[pair_top].T):
        _, eta, phi, _ = four_vector_kinematics(rec.px[index], rec.py[index], rec.pz[index], rec.e[index])
        inside &= delta_r(eta, phi, jets.eta[pair_jet], jets.phi[pair_jet]) < radius
    contained[pair_jet[inside]] = 1
    return contained


def visible_final_state(rec: EventRecord) -> np.ndarray:
    """Mask of final-state particles a detector can see (everything but neutrinos)."""
    return (rec.status > 0) & ~np.isin(np.abs(rec.pdgid), NEUTRINOS)


_ALGORITHMS = {"antikt": "antikt_algorithm", "kt": "kt_algorithm", "cambridge": "cambridge_algorithm"}


@dataclass
class ClusteredJets:
    """Jets of a batch, flat and ordered by event then decreasing pT."""

    event: np.ndarray  # (n_jets,) event within the batch
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    constituent_offsets: np.ndarray  # (n_jets + 1,)
    constituents: np.ndarray  # global particle indices


def cluster_jets(rec: EventRecord, jets_cfg: Mapping) -> ClusteredJets:
    """Cluster visible final-state particles with FastJet, all events of the batch at once."""
    import fastjet

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


def match_hadrons(
    rec: EventRecord, jets: ClusteredJets, hadrons: np.ndarray, match_dr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Match each hadron to its nearest jet of the same event within match_dr.

    Returns (positions in ``hadrons`` of the matched ones, their jet indices), ordered by jet.
    """
    jet_offsets = np.concatenate([[0], np.cumsum(np.bincount(jets.event, minlength=rec.n_events))])
    had_event = rec.event[hadrons]
    n_candidates = jet_offsets[had_event + 1] - jet_offsets[had_event]
    pair_hadron = np.repeat(np.arange(len(hadrons)), n_candidates)
    pair_jet = ragged_rows(jet_offsets, had_event)
    h = hadrons[pair_hadron]
    _, h_eta, h_phi, _ = four_vector_kinematics(rec.px[h], rec.py[h], rec.pz[h], rec.e[h])
    dr = delta_r(h_eta, h_phi, jets.eta[pair_jet], jets.phi[pair_jet])
    order = np.lexsort((dr, pair_hadron))
    first = np.ones(len(order), bool)
    first[1:] = pair_hadron[order][1:] != pair_hadron[order][:-1]
    best = order[first]
    best = best[dr[best] < match_dr]
    by_jet = np.argsort(pair_jet[best], kind="stable")
    return pair_hadron[best[by_jet]], pair_jet[best[by_jet]]


class ChargeTable:
    """Electric charges by PDG id from Pythia's ParticleData, cached per id."""

    def __init__(self, particle_data):
        self._data = particle_data
        self._cache: dict[int, int] = {}

    def __call__(self, pdgid: np.ndarray) -> np.ndarray:
        ids, inverse = np.unique(pdgid, return_inverse=True)
        for i in ids.tolist():
            if i not in self._cache:
                self._cache[i] = int(round(self._data.charge(i)))
        return np.array([self._cache[i] for i in ids.tolist()], np.int8)[inverse]


def particle_jet_arrays(
    rec: EventRecord,
    sample: Mapping,
    charges: ChargeTable,
    first_event: int,
) -> tuple[dict, dict]:
    """Everything the particle_jets file stores for one batch: (arrays, counts)."""
    jets = cluster_jets(rec, sample["jets"])
    heavy, heavy_flavour = weak_heavy_hadrons(rec, sample["flavour"]["hadron_min_pt"])
    position, matched_jet = match_hadrons(rec, jets, heavy, sample["flavour"]["match_dr"])
    matched, matched_flavour = heavy[position], heavy_flavour[position]
    jet_flavour = np.zeros(len(jets.pt), np.int8)
    np.maximum.at(jet_flavour, matched_jet, matched_flavour)

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


@dataclass
class ShardGenerator:
    """What every generated shard starts from: the sample's settings, Pythia's seed and
    setting strings, the initialised Pythia, its charge table and the file's provenance."""

    sample: dict
    seed: int
    settings: list[str]
    pythia: object
    charges: ChargeTable
    attrs: dict

    @classmethod
    def start(cls, config: Mapping, sample_name: str, shard: int) -> "ShardGenerator":
        """Pythia seeded with derive_seed(seed, sample, shard, "pythia") and the provenance
        attributes (``provenance_attrs`` of the sample's config, the sample and shard,
        Pythia's version and settings); ValueError for a shard out of range."""
        sample = sample_config(config, sample_name)
        if shard < 0 or shard >= sample["shards"]:
            raise ValueError(f"shard {shard} out of range: sample {sample_name!r} has {sample['shards']} shards")
        seed = derive_seed(config["seed"], sample_name, shard, "pythia")
        settings = pythia_settings(sample, seed)
        pythia = make_pythia(settings)
        stage = stage_config(config, sample_name)
        attrs = provenance_attrs(stage, config_hash(stage), seed)
        attrs.update(sample=sample_name, shard=shard, pythia_version=pythia_version(pythia),
                     pythia_settings="\n".join(settings))
        return cls(sample, seed, settings, pythia, ChargeTable(pythia.particleData), attrs)


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
    from tqdm import tqdm

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
