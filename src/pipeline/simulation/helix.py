"""Charged particles in a uniform solenoid field along +z: the helix that the tracker's
perigee and the calorimeter's impact point both follow, written once, and its first
crossing of the calorimeter's front face (``propagate_to_calorimeter``).

Conventions (ATLAS): B [T] along +z, momenta in GeV, lengths in mm. A particle of charge
q turns clockwise seen from +z when q B > 0; its transverse circle has radius
R = pT / (C_LIGHT |q B|) and centre to the right of its direction of motion.
"""

from __future__ import annotations

import math

import numpy as np

#: R [mm] = pT [GeV] / (C_LIGHT * |q B| [T]): c = 0.299792458 GeV / (T m).
C_LIGHT = 0.299792458e-3


def curvature_radius(pt, charge, bfield):
    """Radius [mm] of the transverse circle, shape of ``pt`` [GeV] (charge [e], bfield [T] non-zero)."""
    return pt / (C_LIGHT * abs(bfield) * np.abs(charge))


def circle_centre(x, y, px, py, radius, sense):
    """Centre (cx, cy) [mm] of the transverse circle through (x, y) [mm] with momentum
    (px, py) [GeV]; ``sense`` = sign(q B) (+1: clockwise seen from +z, the centre to the
    right of the motion)."""
    pt = np.hypot(px, py)
    return x + sense * radius * py / pt, y - sense * radius * px / pt


def counter_clockwise_angle(cx, cy, x0, y0, x1, y1):
    """Angle [rad] in (-pi, pi] from (x0, y0) to (x1, y1) seen from the centre (cx, cy),
    counted counter-clockwise; a particle of sense s moves by -s times this angle."""
    ux, uy, wx, wy = x0 - cx, y0 - cy, x1 - cx, y1 - cy
    return np.arctan2(ux * wy - uy * wx, ux * wx + uy * wy)


def propagate_to_calorimeter(px, py, pz, charge, vx, vy, vz, bfield: float, radius: float):
    """Impact point on the calorimeter front face (a cylinder of ``radius`` [mm] about z).

    px, py, pz [GeV], charge [e], vx, vy, vz [mm] (production vertex): arrays of shape (n,).
    Charged particles follow a helix in the field ``bfield`` [T] along +z (radius of
    curvature R [mm] = pT / (C_LIGHT * |B| * |q|), i.e. R[m] = pT / (0.3 B |q|)); a
    positive particle in B > 0 turns clockwise seen from +z, so from the beam line its
    azimuth at the radius r is phi0 - q asin(r / (2 R)) (the tracker's convention).
    The vertex is taken into account exactly: the helix (or, for neutral particles or
    B = 0, the straight line) starts at (vx, vy, vz) and the first crossing of the
    cylinder along the direction of motion is used; z advances by the transverse arc
    length times pz / pT.

    Returns (eta, phi [rad], reaches), shape (n,): eta = asinh(z / r) of the impact point
    seen from the origin, phi its azimuth, and reaches False (eta, phi NaN) for loopers
    (the helix never gets to r), particles with pT = 0, and particles produced at or
    beyond the radius.
    """
    px, py, pz, q, vx, vy, vz = np.broadcast_arrays(
        *(np.asarray(a, np.float64) for a in (px, py, pz, charge, vx, vy, vz)))
    r = float(radius)
    pt = np.hypot(px, py)
    moving = pt > 0
    safe_pt = np.where(moving, pt, 1.0)
    ux, uy = px / safe_pt, py / safe_pt
    inside = np.hypot(vx, vy) < r

    # Straight line: |v + s u| = r, the positive root (s: transverse path length).
    b = vx * ux + vy * uy
    disc = b * b - (vx * vx + vy * vy - r * r)
    s_line = -b + np.sqrt(np.maximum(disc, 0.0))
    x_line, y_line = vx + s_line * ux, vy + s_line * uy

    # Helix: circle of radius R about c; the particle turns by -sign(q B) (clockwise for
    # q B > 0). Intersect it with the circle of radius r about the origin.
    curved = (q != 0) & (bfield != 0)
    sense = np.sign(q) * np.sign(bfield)
    field = bfield if bfield != 0 else 1.0  # (straight lines when B = 0)
    big_r = curvature_radius(safe_pt, np.where(curved, q, 1.0), field)
    cx, cy = circle_centre(vx, vy, np.where(moving, px, 1.0), py, big_r, sense)
    d = np.hypot(cx, cy)
    safe_d = np.where(d > 0, d, 1.0)
    a = (r * r - big_r * big_r + d * d) / (2.0 * safe_d)  # along c from the origin
    h2 = r * r - a * a
    crosses = (h2 >= 0) & (d > 0)
    h = np.sqrt(np.maximum(h2, 0.0))
    ex, ey = cx / safe_d, cy / safe_d
    best_angle = np.full(pt.shape, np.inf)
    x_helix, y_helix = np.zeros(pt.shape), np.zeros(pt.shape)
    for sign in (1.0, -1.0):
        xi, yi = a * ex - sign * h * ey, a * ey + sign * h * ex
        # Angle turned from the vertex to this crossing, counted in the direction of motion.
        angle = np.mod(-sense * counter_clockwise_angle(cx, cy, vx, vy, xi, yi), 2.0 * math.pi)
        first = angle < best_angle
        best_angle = np.where(first, angle, best_angle)
        x_helix, y_helix = np.where(first, xi, x_helix), np.where(first, yi, y_helix)
    s_helix = big_r * best_angle

    x = np.where(curved, x_helix, x_line)
    y = np.where(curved, y_helix, y_line)
    s = np.where(curved, s_helix, s_line)
    reaches = moving & inside & np.where(curved, crosses, True)
    z = vz + s * pz / safe_pt
    eta = np.where(reaches, np.arcsinh(z / r), np.nan)
    phi = np.where(reaches, np.arctan2(y, x), np.nan)
    return eta, phi, reaches

