"""The fast tracker model: charged particles to smeared perigee tracks with truth vertices.

Geometry: a uniform solenoid field B along +z; the perigee is the point of the helix
closest to the beam line (x = y = 0). Sign conventions follow ATLAS: the perigee point
is (-d0 sin(phi0), d0 cos(phi0)), z0 is z there, theta the polar angle, q/p in 1/GeV.
Resolutions are ATLAS-like (fitted to the Delphes ATLAS card, de Favereau et al., JHEP 02
(2014) 057; ATLAS, JINST 3 (2008) S08003) and independent per parameter
(diagonal covariance).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from pipeline.io.hdf5 import parent_index
from pipeline.partition import all_pairs, connected_components, local_labels
from pipeline.simulation.helix import circle_centre, counter_clockwise_angle, curvature_radius
from pipeline.simulation.kinematics import eta_from_theta


def perigee(x, y, z, px, py, pz, charge, bfield):
    """Perigee parameters w.r.t. the beam line of helices starting at (x, y, z) [mm]
    with momentum (px, py, pz) [GeV] and charge [e] in a field bfield [T] along +z.

    Returns (d0 [mm], z0 [mm], phi0 [rad], theta [rad], q/p [1/GeV]), arrays of the
    input shape. Charge must be non-zero.
    """
    x, y, z, px, py, pz = (np.asarray(a, np.float64) for a in (x, y, z, px, py, pz))
    s = np.sign(charge).astype(np.float64)
    pt = np.hypot(px, py)
    radius = curvature_radius(pt, 1.0, bfield)  # the track's |q| = 1
    cx, cy = circle_centre(x, y, px, py, radius, s)
    dist = np.hypot(cx, cy)
    d0 = s * (radius - dist)
    phi0 = np.arctan2(s * cx, -s * cy)
    # The perigee is the circle's point nearest the beam line, the origin's direction
    # from the centre; the particle moves by -s times the angle to it.
    angle = counter_clockwise_angle(cx, cy, x, y, 0.0, 0.0)
    arc = -s * angle * radius
    z0 = z + arc * pz / pt
    theta = np.arctan2(pt, pz)
    qoverp = s / np.sqrt(pt**2 + pz**2)
    return d0, z0, phi0, theta, qoverp


def resolutions(pt, theta, resolution: Mapping):
    """Resolution of (d0, z0, phi0, theta, q/p) for true pT [GeV] and theta, per the config.

    d0: c (+) s/(pT sqrt(sin theta)); z0: c (+) s/(pT sqrt(sin^3 theta));
    phi: c (+) s/(p sqrt(sin theta)); theta from cot(theta): (c (+) s/(p sqrt(sin^3 theta)))
    * sin^2 theta; q/p: |q/p| * (c (+) s pT) * (1 + (|eta|/eta_scale)^2).
    """
    sin = np.sin(theta)
    p = pt / sin
    eta = np.abs(eta_from_theta(theta))

    def quad(term, x):
        return np.hypot(term["constant"], term["slope"] * x)

    r = resolution
    sigma_d0 = quad(r["d0"], 1.0 / (pt * np.sqrt(sin)))
    sigma_z0 = quad(r["z0"], 1.0 / (pt * np.sqrt(sin**3)))
    sigma_phi = quad(r["phi"], 1.0 / (p * np.sqrt(sin)))
    sigma_theta = quad(r["cot_theta"], 1.0 / (p * np.sqrt(sin**3))) * sin**2
    rel_pt = quad(r["pt"], pt) * (1.0 + (eta / r["pt"]["eta_scale"]) ** 2)
    sigma_qoverp = rel_pt / p
    return sigma_d0, sigma_z0, sigma_phi, sigma_theta, sigma_qoverp


def select_trackable(constituents: Mapping[str, np.ndarray], tracker: Mapping, rng) -> np.ndarray:
    """Mask of constituents that become tracks: charged, inside the acceptance and the
    silicon volume, and kept by the tracking efficiency."""
    c = constituents
    pt = np.hypot(c["px"], c["py"])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(c["pz"] / pt)
    accepted = (
        (c["charge"] != 0)
        & (pt > tracker["min_pt"])
        & (np.abs(eta) < tracker["max_abs_eta"])
        & (np.hypot(c["vx"], c["vy"]) < tracker["max_production_radius"])
        & (np.abs(c["vz"]) < tracker["max_production_z"])
    )
    # Draw for every constituent so the stream does not depend on the acceptance cuts.
    return accepted & (rng.random(len(pt)) < tracker["efficiency"])


def truth_vertices(prod: np.ndarray, offsets: np.ndarray, merge_distance: float):
    """Partition each jet's tracks by production point (single linkage within merge_distance).

    prod: (n_tracks, 3) production points [mm]; offsets: (n_jets + 1,) tracks per jet.
    Returns (vertex label of each track within its jet, (n_jets + 1,) vertex offsets,
    index of each vertex's first track).
    """
    i, j = all_pairs(offsets)
    close = np.sum((prod[i] - prod[j]) ** 2, axis=1) <= merge_distance**2
    components = connected_components(len(prod), i[close], j[close])
    labels, vertex_offsets = local_labels(components, offsets)
    first_track = np.flatnonzero(components == np.arange(len(prod)))
    return labels, vertex_offsets, first_track


def simulate_tracks(constituents: Mapping[str, np.ndarray], offsets: np.ndarray, tracker: Mapping, rng):
    """Tracks and truth vertices for a chunk of jets.

    constituents: the particle_jets constituent fields; offsets: (n_jets + 1,) their
    per-jet offsets. Returns (arrays, counts) for the ``tracks`` and ``vertices``
    collections of the track_jets schema; tracks ordered by decreasing smeared pT.
    """
    c = constituents
    jet_of = parent_index(offsets)
    keep = np.flatnonzero(select_trackable(c, tracker, rng))
    charge = c["charge"][keep]
    true = perigee(c["vx"][keep], c["vy"][keep], c["vz"][keep], c["px"][keep], c["py"][keep],
                   c["pz"][keep], charge, tracker["bfield"])
    true_pt = np.hypot(c["px"][keep], c["py"][keep])
    sigmas = resolutions(true_pt, true[3], tracker["resolution"])
    noise = rng.standard_normal((5, len(keep)))
    smeared = [t + s * n for t, s, n in zip(true, sigmas, noise)]
    d0, z0, phi, theta, qoverp = smeared
    phi = np.arctan2(np.sin(phi), np.cos(phi))
    theta = np.clip(theta, 1e-6, np.pi - 1e-6)
    pt = np.sin(theta) / np.abs(qoverp)

    # Order tracks by jet, then decreasing smeared pT.
    jet = jet_of[keep]
    order = np.lexsort((-pt, jet))
    n_per_jet = np.bincount(jet, minlength=len(offsets) - 1)
    track_offsets = np.concatenate([[0], np.cumsum(n_per_jet)])
    src = keep[order]
    prod = np.stack([c["vx"][src], c["vy"][src], c["vz"][src]], axis=1)
    labels, vertex_offsets, first = truth_vertices(prod, track_offsets, tracker["vertex_merge_distance"])

    # Each vertex's hadron: the earliest decaying particle among its tracks (0 = primary).
    vertex_global = labels + vertex_offsets[:-1][jet[order]]
    n_vertices = int(vertex_offsets[-1])
    parent = c["parent_index"][src].astype(np.int64)
    hadron_index = np.full(n_vertices, np.iinfo(np.int64).max)
    np.minimum.at(hadron_index, vertex_global, parent)
    hadron_pdgid = np.zeros(n_vertices, np.int32)
    is_hadron = parent == hadron_index[vertex_global]
    hadron_pdgid[vertex_global[is_hadron]] = c["parent_pdgid"][src][is_hadron]

    tracks = {
        "d0": d0[order], "z0": z0[order], "phi": phi[order], "theta": theta[order],
        "qoverp": qoverp[order],
        "sigma_d0": sigmas[0][order], "sigma_z0": sigmas[1][order], "sigma_phi": sigmas[2][order],
        "sigma_theta": sigmas[3][order], "sigma_qoverp": sigmas[4][order],
        "pt": pt[order], "eta": eta_from_theta(theta[order]),
        "charge": np.sign(qoverp[order]).astype(np.int8),
        "true_d0": true[0][order], "true_z0": true[1][order], "true_phi": true[2][order],
        "true_theta": true[3][order], "true_qoverp": true[4][order],
        "pdgid": c["pdgid"][src], "vertex": labels,
        "prod_x": prod[:, 0], "prod_y": prod[:, 1], "prod_z": prod[:, 2],
    }
    vertices = {
        "x": prod[first, 0], "y": prod[first, 1], "z": prod[first, 2],
        "n_tracks": np.bincount(vertex_global, minlength=n_vertices),
        "primary": (hadron_index == 0).astype(np.int8),
        "hadron_pdgid": hadron_pdgid, "hadron_index": hadron_index,
    }
    counts = {"tracks": n_per_jet, "vertices": np.diff(vertex_offsets)}
    return {"tracks": tracks, "vertices": vertices}, counts
