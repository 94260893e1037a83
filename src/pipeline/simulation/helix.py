"""Charged particles in a uniform solenoid field along +z: the helix that the tracker's
perigee and the calorimeter's impact point both follow, written once.

Conventions (ATLAS): B [T] along +z, momenta in GeV, lengths in mm. A particle of charge
q turns clockwise seen from +z when q B > 0; its transverse circle has radius
R = pT / (C_LIGHT |q B|) and centre to the right of its direction of motion.
"""

from __future__ import annotations

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
