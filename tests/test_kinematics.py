"""Vectorised kinematics helpers against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.simulation.kinematics import delta_r, eta_from_theta, four_vector_kinematics, wrap_phi


def test_four_vector_kinematics_hand_computed():
    # px = 3, py = 4 (pT 5), pz = 12 (p 13), E = 13.5: mass sqrt(13.5^2 - 13^2).
    pt, eta, phi, mass = four_vector_kinematics([3.0], [4.0], [12.0], [13.5])
    assert pt[0] == pytest.approx(5.0)
    assert eta[0] == pytest.approx(math.asinh(12 / 5))
    assert eta[0] == pytest.approx(0.5 * math.log((13 + 12) / (13 - 12)))
    assert phi[0] == pytest.approx(math.atan2(4, 3))
    assert mass[0] == pytest.approx(math.sqrt(13.5**2 - 13**2))


def test_four_vector_kinematics_edge_cases():
    # Along the beam: finite, clipped eta; a slightly negative m^2: mass 0.
    pt, eta, phi, mass = four_vector_kinematics([0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0],
                                                [5.0, 5.0, 1.0 - 1e-12])
    np.testing.assert_array_equal(eta[:2], [20.0, -20.0])
    assert np.all(np.isfinite(eta)) and eta[2] == 0
    np.testing.assert_array_equal(mass, [0.0, 0.0, 0.0])
    assert phi[2] == 0.0 and pt[2] == 1.0


def test_wrap_phi_and_delta_r():
    np.testing.assert_allclose(wrap_phi([0.0, 2 * np.pi + 0.1, -2 * np.pi - 0.1, 3.5]),
                               [0.0, 0.1, -0.1, 3.5 - 2 * np.pi], atol=1e-12)
    wrapped = wrap_phi(np.linspace(-20, 20, 1001))
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    # Across the +-pi boundary the distance is short.
    assert delta_r(0.0, np.pi - 0.1, 0.0, -np.pi + 0.1) == pytest.approx(0.2)
    assert delta_r(1.0, 0.0, -2.0, 4.0) == pytest.approx(math.hypot(3.0, 2 * np.pi - 4.0))


def test_eta_from_theta():
    theta = np.array([np.pi / 2, 0.3, np.pi - 0.3])
    np.testing.assert_allclose(eta_from_theta(theta), [0.0, -math.log(math.tan(0.15)), math.log(math.tan(0.15))],
                               atol=1e-12)
    # Inverse of theta = 2 atan(exp(-eta)).
    eta = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(eta_from_theta(2 * np.arctan(np.exp(-eta))), eta, atol=1e-12)
