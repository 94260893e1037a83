"""The charged pion's track and the extrapolation of particles into the calorimeter layers.

A charged particle follows its helix in the solenoid field (``pipeline.simulation.helix``)
up to the calorimeter front face, where the field ends, then a straight line along its
direction there; a neutral particle goes straight all the way. ``extrapolate`` gives the
(eta, phi) where either crosses each layer's mid-depth radius: where ATLAS's particle
flow extrapolates the track in every layer (EPJC 77 (2017) 466, Sec. 4), and where this
study centres each particle's shower in that layer, so a low-momentum pion's shower
moves on through the layers as its track does.

The track is the tracker model's (``pipeline.simulation.tracker``): the pion's true
perigee parameters smeared with the configured resolutions, and the helix of the
smeared parameters extrapolated.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from pipeline.simulation.helix import circle_centre, curvature_radius, propagate_to_calorimeter
from pipeline.simulation.tracker import perigee, resolutions


def extrapolate(px, py, pz, charge, vx, vy, vz, bfield: float, front_radius: float, radii) -> tuple[np.ndarray, ...]:
    """(eta, phi [rad]) of particles at each of ``radii`` [mm] (all >= front_radius).

    px, py, pz [GeV], charge [e], vx, vy, vz [mm]: (n,). Helix to the cylinder of
    ``front_radius`` in ``bfield`` [T] (``propagate_to_calorimeter``), then straight on
    along the momentum there. Returns eta, phi (n, n_radii) as seen from the origin, and
    reaches (n,): False (NaN positions) where the particle never gets to the front face.
    """
    px, py, pz, q, vx, vy, vz = (np.asarray(a, np.float64) for a in (px, py, pz, charge, vx, vy, vz))
    radii = np.asarray(radii, np.float64)
    eta0, phi0, reaches = propagate_to_calorimeter(px, py, pz, q, vx, vy, vz, bfield, front_radius)
    x, y = front_radius * np.cos(phi0), front_radius * np.sin(phi0)
    z = front_radius * np.sinh(eta0)
    pt = np.hypot(px, py)
    safe_pt = np.where(pt > 0, pt, 1.0)
    # Direction at the front face: the helix's tangent there (clockwise for q B > 0, the
    # centre to the right of the motion), or the momentum itself when it does not bend.
    sense = np.sign(q) * np.sign(bfield)
    curved = sense != 0
    radius = curvature_radius(safe_pt, np.where(curved, q, 1.0), bfield if bfield else 1.0)
    cx, cy = circle_centre(vx, vy, np.where(pt > 0, px, 1.0), py, radius, np.where(curved, sense, 1.0))
    tx = np.where(curved, sense * (y - cy) / radius, px / safe_pt)
    ty = np.where(curved, -sense * (x - cx) / radius, py / safe_pt)
    # Straight line |(x, y) + u t| = r: the positive root.
    b = (x * tx + y * ty)[:, None]
    u = -b + np.sqrt(np.maximum(b * b - (front_radius**2 - radii[None, :] ** 2), 0.0))
    xl, yl = x[:, None] + u * tx[:, None], y[:, None] + u * ty[:, None]
    zl = z[:, None] + u * (pz / safe_pt)[:, None]
    rl = np.hypot(xl, yl)
    return np.arcsinh(zl / rl), np.arctan2(yl, xl), reaches


def smeared_tracks(particles: Mapping[str, np.ndarray], tracker: Mapping, rng) -> dict[str, np.ndarray]:
    """Tracks of charged particles (n,): their perigee parameters smeared by the tracker's
    resolutions, and the track's momentum components at the perigee.

    particles: px, py, pz [GeV], charge [e], vx, vy, vz [mm], each (n,); every one charged.
    Returns d0, z0 [mm], phi, theta [rad], qoverp [1/GeV], their sigmas (sigma_*), and
    p, pt [GeV], px, py, pz [GeV] and the perigee point x, y, z [mm] of the smeared track.
    Draws 5 normal numbers per particle.
    """
    c = particles
    true = perigee(c["vx"], c["vy"], c["vz"], c["px"], c["py"], c["pz"], c["charge"], tracker["bfield"])
    true_pt = np.hypot(c["px"], c["py"])
    sigmas = resolutions(true_pt, true[3], tracker["resolution"])
    noise = rng.standard_normal((5, len(true_pt)))
    d0, z0, phi, theta, qoverp = (t + s * n for t, s, n in zip(true, sigmas, noise))
    phi = np.arctan2(np.sin(phi), np.cos(phi))
    theta = np.clip(theta, 1e-6, np.pi - 1e-6)
    p = 1.0 / np.abs(qoverp)
    pt = p * np.sin(theta)
    out = {"d0": d0, "z0": z0, "phi": phi, "theta": theta, "qoverp": qoverp, "p": p, "pt": pt,
           "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": p * np.cos(theta),
           # The perigee point (ATLAS: (-d0 sin phi0, d0 cos phi0, z0)), where the helix starts.
           "x": -d0 * np.sin(phi), "y": d0 * np.cos(phi), "z": z0}
    out.update({f"sigma_{name}": sigma for name, sigma in zip(("d0", "z0", "phi", "theta", "qoverp"), sigmas)})
    return out
