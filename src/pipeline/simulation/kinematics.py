"""Vectorised collider kinematics on NumPy arrays (GeV, rad)."""

from __future__ import annotations

import numpy as np


def four_vector_kinematics(px, py, pz, e):
    """(pt, eta, phi, mass) of four-vectors given as arrays of px, py, pz, E in GeV.

    Pseudorapidity of a particle along the beam is +-inf-safe (clipped at |eta| = 20);
    a slightly negative m^2 from rounding gives mass 0.
    """
    px, py, pz, e = (np.asarray(a, dtype=np.float64) for a in (px, py, pz, e))
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, np.sign(pz) * 1e9))
    eta = np.clip(eta, -20.0, 20.0)
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - p**2, 0.0))
    return pt, eta, phi, mass


def wrap_phi(dphi):
    """An angle difference wrapped into [-pi, pi)."""
    return (np.asarray(dphi) + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    """Distance in the (eta, phi) plane."""
    return np.hypot(np.asarray(eta1) - eta2, wrap_phi(np.asarray(phi1) - phi2))


def eta_from_theta(theta):
    return -np.log(np.tan(np.asarray(theta) / 2.0))
