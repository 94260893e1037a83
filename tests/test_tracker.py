"""The fast tracker: perigee geometry, resolutions, smearing pulls and truth vertices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.run_config import resolve_config
from pipeline.simulation.helix import C_LIGHT
from pipeline.simulation.kinematics import eta_from_theta
from pipeline.simulation.tracker import perigee, resolutions, truth_vertices

B = 2.0
DEFAULTS = resolve_config({"samples": {"s": {"process": "ttbar"}}})
TRACKER = DEFAULTS["tracker"]


def reference_perigee(x, y, z, px, py, pz, q, bfield):
    """Perigee of one helix from plain geometry (independent of the package).

    The circle centre follows from the Lorentz force q v x B (B along +z); the perigee is
    the point of the circle closest to the origin; phi0 is the direction of motion there;
    d0 follows from the ATLAS convention perigee = (-d0 sin phi0, d0 cos phi0); z0 follows
    from the arc length between production and perigee, negative when the perigee lies
    behind the particle.
    """
    pt = math.hypot(px, py)
    radius = pt / (C_LIGHT * bfield)
    force = np.array([py, -px]) * q / pt  # direction of q v x B in the transverse plane
    centre = np.array([x, y]) + radius * force
    dist = np.linalg.norm(centre)
    point = centre * (1.0 - radius / dist)
    # Sense of rotation: the sign of the angular momentum about the centre.
    r0 = np.array([x, y]) - centre
    sense = np.sign(r0[0] * py - r0[1] * px)  # +1 counter-clockwise
    rp = point - centre
    tangent = sense * np.array([-rp[1], rp[0]]) / radius
    phi0 = math.atan2(tangent[1], tangent[0])
    d0 = -point[0] * math.sin(phi0) + point[1] * math.cos(phi0)
    chord = math.hypot(point[0] - x, point[1] - y)
    arc = 2 * radius * math.asin(min(chord / (2 * radius), 1.0))
    ahead = np.sign((point[0] - x) * px + (point[1] - y) * py)
    z0 = z + ahead * arc * pz / pt
    p = math.sqrt(pt**2 + pz**2)
    return d0, z0, phi0, math.atan2(pt, pz), q / p


def wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


# --- perigee geometry ---------------------------------------------------------------------


def test_hand_computed_helix_positive_charge():
    # pT = 1 GeV along +y from (0, 10, 5) mm: the centre lies at (R, 10) (force q v x B along +x).
    radius = 1.0 / (0.299792458e-3 * B)
    centre = np.array([radius, 10.0])
    dist = math.hypot(radius, 10.0)
    point = centre * (1 - radius / dist)  # closest point of the circle to the origin
    # Clockwise motion: at (0, 10) (relative position (-R, 0)) the velocity is +y.
    rel = point - centre
    phi0 = math.atan2(-rel[0], rel[1])  # clockwise tangent (rel_y, -rel_x)
    d0 = -point[0] * math.sin(phi0) + point[1] * math.cos(phi0)
    assert abs(d0) == pytest.approx(dist - radius, rel=1e-12)
    assert d0 < 0  # the beam line lies to the left of a clockwise track seen from +z
    chord = math.hypot(point[0], point[1] - 10.0)
    arc = 2 * radius * math.asin(chord / (2 * radius))
    z0 = 5.0 - arc * (1.0 / 1.0)  # extrapolated backwards, pz/pT = 1
    got = perigee(0.0, 10.0, 5.0, 0.0, 1.0, 1.0, 1, B)
    assert got[0] == pytest.approx(d0, rel=1e-9)
    assert got[0] == pytest.approx(-(math.sqrt(radius**2 + 100) - radius), rel=1e-9)
    assert got[1] == pytest.approx(z0, abs=1e-9)
    assert got[2] == pytest.approx(phi0, abs=1e-12)
    assert got[2] > np.pi / 2  # turning clockwise, i.e. towards +x, from +y
    assert got[3] == pytest.approx(np.pi / 4)
    assert got[4] == pytest.approx(1 / math.sqrt(2))


def test_hand_computed_helix_negative_charge_is_the_mirror_image():
    radius = 1.0 / (0.299792458e-3 * B)
    dist = math.hypot(radius, 10.0)
    got = perigee(0.0, 10.0, 5.0, 0.0, 1.0, 1.0, -1, B)
    plus = perigee(0.0, 10.0, 5.0, 0.0, 1.0, 1.0, 1, B)
    # Mirror x -> -x: centre (-R, 10), counter-clockwise, d0 flips sign, phi0 -> pi - phi0.
    assert got[0] == pytest.approx(dist - radius, rel=1e-9)
    assert got[0] > 0
    assert got[1] == pytest.approx(plus[1], abs=1e-9)
    assert got[2] == pytest.approx(np.pi - plus[2], abs=1e-12)
    assert got[2] < np.pi / 2
    assert got[3] == pytest.approx(np.pi / 4)
    assert got[4] == pytest.approx(-1 / math.sqrt(2))
    ref = reference_perigee(0.0, 10.0, 5.0, 0.0, 1.0, 1.0, -1, B)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_perigee_matches_geometry_for_random_helices(rng):
    n = 300
    x, y = rng.uniform(-30, 30, (2, n))
    z = rng.uniform(-100, 100, n)
    pt = rng.uniform(0.5, 50, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pz = rng.normal(0, 30, n)
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    q = rng.choice([-1, 1], n)
    got = np.array(perigee(x, y, z, px, py, pz, q, B))
    assert got.shape == (5, n)
    ref = np.array([reference_perigee(*args, B) for args in zip(x, y, z, px, py, pz, q)]).T
    np.testing.assert_allclose(got[0], ref[0], atol=1e-8)
    np.testing.assert_allclose(got[1], ref[1], atol=1e-7)
    np.testing.assert_allclose(wrap(got[2] - ref[2]), 0, atol=1e-10)
    np.testing.assert_allclose(got[3:], ref[3:], rtol=1e-12)


def test_prompt_tracks(rng):
    n = 500
    px, py, pz = rng.normal(0, 10, (3, n))
    q = rng.choice([-1, 1], n)
    zeros = np.zeros(n)
    d0, z0, phi0, theta, qoverp = perigee(zeros, zeros, zeros, px, py, pz, q, B)
    np.testing.assert_allclose(d0, 0, atol=1e-9)
    np.testing.assert_allclose(z0, 0, atol=1e-9)
    np.testing.assert_allclose(wrap(phi0 - np.arctan2(py, px)), 0, atol=1e-12)
    np.testing.assert_allclose(theta, np.arctan2(np.hypot(px, py), pz), rtol=1e-12)
    np.testing.assert_allclose(qoverp, q / np.sqrt(px**2 + py**2 + pz**2), rtol=1e-12)


def test_tracks_from_the_beam_line(rng):
    n = 200
    z = rng.uniform(-200, 200, n)
    px, py, pz = rng.normal(0, 10, (3, n))
    q = rng.choice([-1, 1], n)
    zeros = np.zeros(n)
    d0, z0, phi0, _, _ = perigee(zeros, zeros, z, px, py, pz, q, B)
    np.testing.assert_allclose(d0, 0, atol=1e-9)
    np.testing.assert_allclose(z0, z, atol=1e-9)
    np.testing.assert_allclose(wrap(phi0 - np.arctan2(py, px)), 0, atol=1e-12)


@pytest.mark.parametrize("charge", [-1, 1])
def test_straight_line_limit(rng, charge):
    n = 100
    x0, y0 = rng.uniform(-20, 20, (2, n))
    z = rng.uniform(-50, 50, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = 1e6
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz = rng.uniform(-1, 1, n) * pt
    d0, z0, phi0, _, _ = perigee(x0, y0, z, px, py, pz, np.full(n, charge), B)
    np.testing.assert_allclose(d0, y0 * np.cos(phi) - x0 * np.sin(phi), atol=1e-5)
    np.testing.assert_allclose(wrap(phi0 - phi), 0, atol=1e-6)
    # z at the point of closest approach of the straight line.
    along = x0 * np.cos(phi) + y0 * np.sin(phi)
    np.testing.assert_allclose(z0, z - along * pz / pt, atol=1e-5)


def test_d0_scales_with_the_field():
    # Larger B: smaller radius, larger |d0| for the same displaced track.
    d0_weak = perigee(0.0, 10.0, 0.0, 0.0, 1.0, 0.0, 1, 0.5)[0]
    d0_strong = perigee(0.0, 10.0, 0.0, 0.0, 1.0, 0.0, 1, 4.0)[0]
    radius = 1.0 / (C_LIGHT * 4.0)
    assert d0_strong == pytest.approx(-(math.hypot(radius, 10) - radius), rel=1e-9)
    assert abs(d0_strong) > abs(d0_weak)


# --- resolutions ---------------------------------------------------------------------------


def test_resolution_at_one_gev_central():
    s_d0, s_z0, s_phi, s_theta, s_qoverp = resolutions(np.array([1.0]), np.array([np.pi / 2]), TRACKER["resolution"])
    assert s_d0[0] == pytest.approx(math.hypot(0.010, 0.070), rel=1e-12)
    assert s_z0[0] == pytest.approx(math.hypot(0.045, 0.130), rel=1e-12)
    assert s_phi[0] == pytest.approx(math.hypot(0.000075, 0.0018), rel=1e-12)
    assert s_theta[0] == pytest.approx(math.hypot(0.0007, 0.0020), rel=1e-12)
    # sigma(pT)/pT at eta = 0 and |q/p| = 1/GeV.
    assert s_qoverp[0] == pytest.approx(math.hypot(0.015, 0.00034), rel=1e-12)


def test_resolution_hand_computed_forward():
    # pT = 2 GeV at theta = pi/6: sin = 1/2, p = 4 GeV, eta = -ln(tan(pi/12)) = 1.3170.
    pt, theta = 2.0, math.pi / 6
    sin, p = 0.5, 4.0
    eta = -math.log(math.tan(theta / 2))
    got = resolutions(np.array([pt]), np.array([theta]), TRACKER["resolution"])
    expected = (
        math.hypot(0.010, 0.070 / (pt * math.sqrt(sin))),
        math.hypot(0.045, 0.130 / (pt * math.sqrt(sin**3))),
        math.hypot(0.000075, 0.0018 / (p * math.sqrt(sin))),
        math.hypot(0.0007, 0.0020 / (p * math.sqrt(sin**3))) * sin**2,
        math.hypot(0.015, 0.00034 * pt) * (1 + (eta / 1.5) ** 2) / p,
    )
    for name, g, e in zip(("d0", "z0", "phi", "theta", "qoverp"), got, expected):
        assert g[0] == pytest.approx(e, rel=1e-12), name


def test_resolutions_fall_with_pt_and_grow_forward():
    pt = np.array([0.5, 1.0, 2.0, 5.0, 20.0, 100.0])
    central = np.full_like(pt, np.pi / 2)
    s_d0, s_z0, s_phi, s_theta, s_qoverp = resolutions(pt, central, TRACKER["resolution"])
    for sigma in (s_d0, s_z0, s_phi, s_theta):
        assert np.all(np.diff(sigma) < 0)
    # Large pT: d0 resolution approaches its constant term from above.
    assert 0.010 < s_d0[-1] < 0.0101
    # At fixed pT, forward tracks (theta = 0.3) have worse d0, z0 and relative pT
    # resolution (phi and theta scale with p, which grows forward at fixed pT).
    forward = resolutions(pt, np.full_like(pt, 0.3), TRACKER["resolution"])
    assert np.all(forward[0] > s_d0) and np.all(forward[1] > s_z0)
    p_ratio = 1 / np.sin(0.3)  # |q/p| is smaller forward: compare sigma(pT)/pT
    assert np.all(forward[4] * p_ratio > s_qoverp)


# --- truth vertices (unit level) --------------------------------------------------------------


def test_truth_vertices_single_linkage():
    # Jet 0: tracks 0, 2 at the origin, 1 at 5 um from 3 which is 8 um from 0 (a chain);
    # track 4 far away. Jet 1: one track. Jet 2: two tracks at the same far point.
    prod = np.array([
        [0, 0, 0], [0.013, 0, 0], [0, 0, 0], [0.008, 0, 0], [1.0, 2.0, 3.0],
        [5, 5, 5],
        [1, 1, 1], [1, 1, 1],
    ], float)
    offsets = np.array([0, 5, 6, 8])
    labels, vertex_offsets, first = truth_vertices(prod, offsets, 0.01)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(vertex_offsets, [0, 2, 3, 4])
    np.testing.assert_array_equal(first, [0, 4, 5, 6])
    # Without the chain link (merge distance below 8 um) track 1 separates from 0 and 2.
    labels, vertex_offsets, _ = truth_vertices(prod, offsets, 0.006)
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 2, 0, 0, 0])


# --- the tiny generated data set -------------------------------------------------------------


def test_smearing_pulls(track_data):
    t = track_data["arrays"]["tracks"]
    n = len(t["d0"])
    assert n > 5000
    # Statistical tolerance: 6 standard errors of the mean and of the standard deviation.
    mean_tol, std_tol = 6 / math.sqrt(n), 6 / math.sqrt(2 * n)
    assert std_tol < 0.1
    for name in ("d0", "z0", "phi", "theta", "qoverp"):
        diff = t[name].astype(np.float64) - t[f"true_{name}"]
        if name == "phi":
            diff = wrap(diff)
        pull = diff / t[f"sigma_{name}"]
        print(f"pull {name}: mean {pull.mean():+.4f}, std {pull.std():.4f} (n={n})")
        assert abs(pull.mean()) < mean_tol, name
        assert abs(pull.std() - 1) < std_tol, name
        assert np.all(t[f"sigma_{name}"] > 0)


def test_stored_resolutions_follow_the_model(track_data):
    t = track_data["arrays"]["tracks"]
    theta = t["true_theta"].astype(np.float64)
    pt_true = np.sin(theta) / np.abs(t["true_qoverp"].astype(np.float64))
    expected = resolutions(pt_true, theta, TRACKER["resolution"])
    for name, sigma in zip(("d0", "z0", "phi", "theta", "qoverp"), expected):
        np.testing.assert_allclose(t[f"sigma_{name}"], sigma, rtol=1e-4, err_msg=name)


def test_track_kinematics_are_consistent(track_data):
    t = track_data["arrays"]["tracks"]
    theta = t["theta"].astype(np.float64)
    np.testing.assert_allclose(t["pt"], np.sin(theta) / np.abs(t["qoverp"]), rtol=1e-5)
    np.testing.assert_allclose(t["eta"], eta_from_theta(theta), atol=1e-4)
    np.testing.assert_array_equal(t["charge"], np.sign(t["qoverp"]))
    assert set(np.unique(np.abs(t["charge"]))) == {1}


def test_tracks_ordered_by_decreasing_pt(track_data):
    t = track_data["arrays"]["tracks"]
    jet = track_data["parent"]["tracks"]
    same_jet = jet[1:] == jet[:-1]
    assert np.all(t["pt"][1:][same_jet] <= t["pt"][:-1][same_jet])


def test_tracks_pass_the_acceptance(track_data):
    t = track_data["arrays"]["tracks"]
    true_theta = t["true_theta"].astype(np.float64)
    true_pt = np.sin(true_theta) / np.abs(t["true_qoverp"].astype(np.float64))
    assert true_pt.min() >= TRACKER["min_pt"] * (1 - 1e-6)
    assert np.abs(eta_from_theta(true_theta)).max() <= TRACKER["max_abs_eta"] + 1e-5
    # Smeared pT may fall a little below the cut, but not far.
    assert t["pt"].min() > 0.8 * TRACKER["min_pt"]
    assert np.hypot(t["prod_x"], t["prod_y"]).max() < TRACKER["max_production_radius"]
    assert np.abs(t["prod_z"]).max() < TRACKER["max_production_z"]
    # Only charged particles become tracks.
    neutral = {22, 111, 130, 310, 2112, 3122, 3212, 3322}
    assert not set(np.abs(t["pdgid"]).tolist()) & neutral


def test_tracks_are_at_most_the_charged_constituents(track_data, particle_data):
    c = particle_data["arrays"]["constituents"]
    jet_of = particle_data["parent"]["constituents"]
    n_jets = len(particle_data["arrays"]["jets"]["pt"])
    charged = np.bincount(jet_of[c["charge"] != 0], minlength=n_jets)
    tracks = np.diff(track_data["offsets"]["tracks"])
    assert len(tracks) == n_jets
    assert np.all(tracks <= charged)
    # Efficiency 1 by default: every charged constituent in the acceptance is tracked.
    pt = np.hypot(c["px"], c["py"])
    eta = np.arcsinh(c["pz"] / np.maximum(pt, 1e-12))
    ok = ((c["charge"] != 0) & (pt > TRACKER["min_pt"]) & (np.abs(eta) < TRACKER["max_abs_eta"])
          & (np.hypot(c["vx"], c["vy"]) < TRACKER["max_production_radius"])
          & (np.abs(c["vz"]) < TRACKER["max_production_z"]))
    np.testing.assert_array_equal(tracks, np.bincount(jet_of[ok], minlength=n_jets))


def test_true_parameters_are_bounded_by_the_production_point(track_data):
    """Near the beam line the perigee lies within the production radius r of the
    production point: |d0| <= r and |z0 - z_prod| <= r |cot theta| (straight-line limit)."""
    t = track_data["arrays"]["tracks"]
    r = np.hypot(t["prod_x"], t["prod_y"])
    near = r < 1.0
    assert near.mean() > 0.5
    cot = np.abs(1 / np.tan(t["true_theta"][near].astype(np.float64)))
    assert np.all(np.abs(t["true_d0"][near]) <= r[near] * 1.0001 + 1e-6)
    assert np.all(np.abs(t["true_z0"][near] - t["prod_z"][near]) <= 1.01 * r[near] * cot + 1e-4)
    # The impact parameters of displaced tracks are not all tiny: b and c decays show up.
    assert np.mean(np.abs(t["true_d0"]) > 0.1) > 0.02


def test_truth_vertex_labels_are_a_partition(track_data):
    a, off = track_data["arrays"], track_data["offsets"]
    labels = a["tracks"]["vertex"]
    n_tracks = a["vertices"]["n_tracks"]
    merge = TRACKER["vertex_merge_distance"]
    prod = np.stack([a["tracks"]["prod_x"], a["tracks"]["prod_y"], a["tracks"]["prod_z"]], axis=1)
    vpos = np.stack([a["vertices"]["x"], a["vertices"]["y"], a["vertices"]["z"]], axis=1)
    n_jets = len(off["tracks"]) - 1
    assert n_jets > 1000
    for jet in range(n_jets):
        t0, t1 = off["tracks"][jet], off["tracks"][jet + 1]
        v0, v1 = off["vertices"][jet], off["vertices"][jet + 1]
        lab = labels[t0:t1]
        k = v1 - v0
        # Labels 0 .. k-1 in order of first appearance.
        first_seen = list(dict.fromkeys(lab.tolist()))
        assert first_seen == list(range(k)), (jet, lab)
        np.testing.assert_array_equal(n_tracks[v0:v1], np.bincount(lab, minlength=k))
        assert n_tracks[v0:v1].sum() == t1 - t0
        # Single linkage: the expected partition from a breadth-first search.
        p = prod[t0:t1]
        close = np.sum((p[:, None] - p[None]) ** 2, axis=2) <= merge**2
        expected = -np.ones(len(p), int)
        next_label = 0
        for start in range(len(p)):
            if expected[start] >= 0:
                continue
            stack = [start]
            expected[start] = next_label
            while stack:
                node = stack.pop()
                for other in np.flatnonzero(close[node] & (expected < 0)):
                    expected[other] = next_label
                    stack.append(other)
            next_label += 1
        np.testing.assert_array_equal(lab, expected)
        # The vertex position is its first track's production point.
        for v in range(k):
            np.testing.assert_array_equal(vpos[v0 + v], p[np.flatnonzero(lab == v)[0]])


def test_primary_vertices(track_data):
    a, parent = track_data["arrays"], track_data["parent"]
    v = a["vertices"]
    ev = a["events"]
    assert set(np.unique(v["primary"]).tolist()) <= {0, 1}
    jet = parent["vertices"]
    n_jets = len(a["jets"]["pt"])
    per_jet = np.bincount(jet[v["primary"] == 1], minlength=n_jets)
    assert per_jet.max() == 1  # at most one primary vertex per jet
    assert per_jet.mean() > 0.8  # and nearly every jet has one
    prim = v["primary"] == 1
    event = parent["jets"][jet[prim]]
    dxy = np.hypot(v["x"][prim] - ev["pv_x"][event], v["y"][prim] - ev["pv_y"][event])
    dz = np.abs(v["z"][prim] - ev["pv_z"][event])
    print(f"primary vertex - event PV: max dxy {dxy.max():.2e} mm, max dz {dz.max():.2e} mm")
    assert dxy.max() < 0.1 and dz.max() < 0.1
    # Primary vertices carry no hadron; secondary ones name theirs.
    assert np.all(v["hadron_pdgid"][prim] == 0) and np.all(v["hadron_index"][prim] == 0)
    assert np.all(v["hadron_pdgid"][~prim] != 0) and np.all(v["hadron_index"][~prim] > 0)
    # A secondary vertex within the merge distance of the event's primary vertex would
    # have been merged with the jet's primary tracks: it occurs only in jets without any.
    sec_event = parent["jets"][jet[~prim]]
    d3 = np.sqrt((v["x"][~prim] - ev["pv_x"][sec_event]) ** 2 + (v["y"][~prim] - ev["pv_y"][sec_event]) ** 2
                 + (v["z"][~prim] - ev["pv_z"][sec_event]) ** 2)
    near_pv = d3 <= TRACKER["vertex_merge_distance"]
    assert np.all(per_jet[jet[~prim][near_pv]] == 0)
    assert np.median(d3) > 0.1


# --- simulate_tracks on a hand-made chunk -------------------------------------------------------


def exact_tracker(**overrides) -> dict:
    """The default tracker with every resolution term zero: smeared == true."""
    zero = {"constant": 0.0, "slope": 0.0}
    res = {k: dict(zero) for k in ("d0", "z0", "phi", "cot_theta")}
    res["pt"] = {**zero, "eta_scale": 1.5}
    config = resolve_config({"samples": {"s": {"process": "ttbar"}},
                              "tracker": {"resolution": res, **overrides}})
    return config["tracker"]


def hand_made_constituents():
    """Three jets: 6 constituents, none, 2 constituents (see the test for what each is)."""
    rows = [
        # pdgid, charge, pt, phi, eta, (vx, vy, vz), parent_index, parent_pdgid
        (211, 1, 5.0, 0.1, 0.2, (0.0, 0.0, 1.0), 0, 0),  # 0: prompt pion
        (22, 0, 9.0, 0.1, 0.2, (0.0, 0.0, 1.0), 0, 0),  # 1: photon (no track)
        (-321, -1, 3.0, 0.15, 0.1, (1.0, 0.5, 3.0), 7, 511),  # 2: kaon from a B0 decay
        (211, 1, 8.0, 0.12, 0.3, (1.0, 0.5, 3.0), 7, 511),  # 3: pion from the same B0 decay
        (-211, -1, 0.5, 0.1, 0.2, (0.0, 0.0, 1.0), 0, 0),  # 4: below min_pt
        (211, 1, 2.0, 0.1, 2.7, (0.0, 0.0, 1.0), 0, 0),  # 5: outside |eta| < 2.5
        (211, 1, 4.0, -2.0, -1.0, (0.002, 0.0, 1.0), 9, 15),  # 6: tau decay 2 um from the PV
        (-211, -1, 1.5, -2.1, -1.1, (0.0, 0.0, 1.0), 0, 0),  # 7: prompt
    ]
    pdgid, charge, pt, phi, eta, v, parent, parent_pdgid = map(np.array, zip(*rows))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    c = {
        "px": px, "py": py, "pz": pz, "energy": np.sqrt(px**2 + py**2 + pz**2 + 0.14**2),
        "pdgid": pdgid.astype(np.int32), "charge": charge.astype(np.int8),
        "vx": v[:, 0], "vy": v[:, 1], "vz": v[:, 2], "vt": np.zeros(len(rows)),
        "parent_index": parent.astype(np.int32), "parent_pdgid": parent_pdgid.astype(np.int32),
    }
    return c, np.array([0, 6, 6, 8])


def test_simulate_tracks_hand_made_chunk():
    from pipeline.simulation.tracker import simulate_tracks

    c, offsets = hand_made_constituents()
    arrays, counts = simulate_tracks(c, offsets, exact_tracker(), np.random.default_rng(1))
    t, v = arrays["tracks"], arrays["vertices"]
    np.testing.assert_array_equal(counts["tracks"], [3, 0, 2])
    np.testing.assert_array_equal(counts["vertices"], [2, 0, 1])
    # Jet 0: tracks by decreasing pT are constituents 3, 0, 2; jet 2: 6, 7.
    src = np.array([3, 0, 2, 6, 7])
    np.testing.assert_array_equal(t["pdgid"], c["pdgid"][src])
    np.testing.assert_allclose(t["pt"], np.hypot(c["px"], c["py"])[src], rtol=1e-12)
    np.testing.assert_array_equal(t["charge"], c["charge"][src])
    np.testing.assert_array_equal(t["vertex"], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(t["prod_x"], c["vx"][src])
    true = perigee(c["vx"][src], c["vy"][src], c["vz"][src], c["px"][src], c["py"][src], c["pz"][src],
                   c["charge"][src], 2.0)
    for name, value in zip(("d0", "z0", "phi", "theta", "qoverp"), true):
        np.testing.assert_allclose(t[f"true_{name}"], value, rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(t[name], value, rtol=1e-12, atol=1e-15, err_msg=name)  # zero resolution
    # Vertices: the B0 decay, then the primary; in jet 2 the tau decay 2 um from the
    # primary vertex merges with it (and the vertex sits at the first track's point).
    np.testing.assert_array_equal(v["n_tracks"], [2, 1, 2])
    np.testing.assert_array_equal(v["primary"], [0, 1, 1])
    np.testing.assert_array_equal(v["hadron_pdgid"], [511, 0, 0])
    np.testing.assert_array_equal(v["hadron_index"], [7, 0, 0])
    np.testing.assert_array_equal(np.c_[v["x"], v["y"], v["z"]], [[1.0, 0.5, 3.0], [0, 0, 1.0], [0.002, 0, 1.0]])


def test_simulate_tracks_merge_distance_and_efficiency():
    from pipeline.simulation.tracker import simulate_tracks

    c, offsets = hand_made_constituents()
    # Merge distance below 2 um: the tau decay is its own (secondary) vertex.
    arrays, counts = simulate_tracks(c, offsets, exact_tracker(vertex_merge_distance=0.001),
                                     np.random.default_rng(1))
    np.testing.assert_array_equal(counts["vertices"], [2, 0, 2])
    np.testing.assert_array_equal(arrays["tracks"]["vertex"][3:], [0, 1])
    np.testing.assert_array_equal(arrays["vertices"]["primary"][2:], [0, 1])
    np.testing.assert_array_equal(arrays["vertices"]["hadron_pdgid"][2:], [15, 0])
    # Efficiency 0: no tracks and no vertices, but one (empty) entry per jet.
    arrays, counts = simulate_tracks(c, offsets, exact_tracker(efficiency=0.0), np.random.default_rng(1))
    np.testing.assert_array_equal(counts["tracks"], [0, 0, 0])
    np.testing.assert_array_equal(counts["vertices"], [0, 0, 0])
    assert all(len(a) == 0 for a in arrays["tracks"].values())
    assert all(len(a) == 0 for a in arrays["vertices"].values())


def test_tracking_efficiency_is_applied():
    from pipeline.simulation.tracker import select_trackable

    n = 20000
    c = {"charge": np.ones(n, np.int8), "px": np.full(n, 5.0), "py": np.zeros(n), "pz": np.zeros(n),
         "vx": np.zeros(n), "vy": np.zeros(n), "vz": np.zeros(n)}
    kept = select_trackable(c, exact_tracker(efficiency=0.9), np.random.default_rng(3)).mean()
    assert abs(kept - 0.9) < 5 * math.sqrt(0.9 * 0.1 / n)
    assert select_trackable(c, exact_tracker(), np.random.default_rng(3)).all()
    # Production outside the silicon volume: not tracked.
    far = dict(c, vx=np.full(n, 600.0))
    assert not select_trackable(far, exact_tracker(), np.random.default_rng(3)).any()
