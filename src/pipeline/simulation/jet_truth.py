"""Truth labels of particle-level jets from the event record: the weakly decaying b and c
hadrons matched to them (the jet's flavour) and whether a hadronic top with its three
decay partons lies inside (top containment)."""

from __future__ import annotations

import numpy as np

from pipeline.io.hdf5 import ragged_rows
from pipeline.simulation.jets import ClusteredJets
from pipeline.simulation.kinematics import delta_r, four_vector_kinematics
from pipeline.simulation.record import SAME_POINT_TOLERANCE, EventRecord


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


def top_containment(rec: EventRecord, jets: ClusteredJets, radius: float) -> np.ndarray:
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


def flavour_labels(rec: EventRecord, jets: ClusteredJets, hadron_min_pt: float,
                   match_dr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The jets' flavours from the weakly decaying b and c hadrons above ``hadron_min_pt``
    [GeV], each matched to its nearest jet within ``match_dr`` (Delta R).

    Returns (hadrons, hadron_flavour, hadron_jet, jet_flavour): the matched hadrons'
    global indices, flavours (5 or 4) and jets, (n_matched,) each, ordered by jet; and
    each jet's flavour (n_jets,) int8: 5 with a matched b hadron, else 4 with a c
    hadron, else 0.
    """
    heavy, heavy_flavour = weak_heavy_hadrons(rec, hadron_min_pt)
    position, hadron_jet = match_hadrons(rec, jets, heavy, match_dr)
    hadrons, hadron_flavour = heavy[position], heavy_flavour[position]
    jet_flavour = np.zeros(len(jets.pt), np.int8)
    np.maximum.at(jet_flavour, hadron_jet, hadron_flavour)
    return hadrons, hadron_flavour, hadron_jet, jet_flavour
