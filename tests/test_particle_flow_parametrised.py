"""The parametrised particle-flow baseline (ATLAS's cell-by-cell charged-energy subtraction).

Synthetic single-pion showers with a known response E/p ~ N(0.7, 0.08): Gaussian lateral
profiles centred on the track in every layer, the first interaction in a chosen layer, one
noise-free cluster (all non-zero cells). Hand-made events check the ring arithmetic exactly.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from default_config import default_config

from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.cell_matching import (
    ATLAS_RING_WIDTHS,
    CellGeometry,
    first_interaction_layer,
    match_track,
)
from pipeline.studies.particle_flow.parametrised import BRANCHES, subtract
from pipeline.studies.particle_flow.templates import MIN_BIN_ENTRIES, P_BINS, SOURCES, Templates, fit_templates

#: The baseline's geometry by default: the schema's detector, ATLAS's rings.
GEOMETRY = CellGeometry.from_window_geometry(WindowGeometry.from_config(default_config()), ATLAS_RING_WIDTHS)
#: Lateral Gaussian width of the synthetic showers per layer, in Delta R.
LATERAL = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08)
R_MEAN, R_SIGMA = 0.7, 0.08
EM2, HAD1 = 1, 3


def _gaussians(centre_eta, centre_phi, width, layer, energies):
    """(n, h, w): per event a Gaussian of ``width`` around the centre in the layer's cells,
    cut below 1e-3 of its peak, normalised to ``energies`` (n,)."""
    eta_c, phi_c = GEOMETRY.cell_centres(layer)
    g = np.exp(-((eta_c[None, :, None] - centre_eta[:, None, None]) ** 2
                 + (phi_c[None, None, :] - centre_phi[:, None, None]) ** 2) / (2 * width**2))
    g = np.where(g > 1e-3 * g.max(axis=(1, 2), keepdims=True), g, 0.0)
    return energies[:, None, None] * g / g.sum(axis=(1, 2), keepdims=True)


def pion_showers(rng, n, start=None, p_range=(2.0, 20.0)):
    """n single charged pions: momenta uniform in p_range, E = p r, r ~ N(0.7, 0.08), the
    shower starting in layer ``start`` (random when None): in front of it a MIP-like 0.2 %
    density, from it on a density falling exponentially with depth (1 lambda), so the
    largest density increase is at ``start``."""
    p = rng.uniform(*p_range, n)
    r = rng.normal(R_MEAN, R_SIGMA, n)
    start = rng.integers(0, 6, n) if start is None else np.full(n, start)
    depth = np.asarray(GEOMETRY.depth_lambda)
    front = np.concatenate([[0.0], np.cumsum(depth)[:-1]])
    layers = np.arange(6)
    weight = np.where(layers[None] >= start[:, None], depth * np.exp(-(front[None] - front[start][:, None])),
                      0.002 * depth)
    layer_energy = (p * r)[:, None] * weight / weight.sum(axis=1, keepdims=True)
    # The track bends a little in phi from layer to layer.
    track_eta = rng.normal(0.0, 0.01, (n, 1)) + np.zeros((n, 6))
    track_phi = rng.normal(0.0, 0.01, (n, 1)) + 0.004 * layers[None]
    energy = [_gaussians(track_eta[:, l], track_phi[:, l], LATERAL[l], l, layer_energy[:, l]) for l in layers]
    labels = [np.where(e > 0, 0, -1) for e in energy]
    return {"energy": energy, "labels": labels, "p": p, "eta": track_eta, "phi": track_phi, "r": r, "start": start}


def add_neutral(rng, events, centre=(0.25, -0.25)):
    """Add a photon-like EM deposit (1-10 GeV) far from the track, a second cluster, and
    relabel: 0 the more energetic cluster, 1 the other. Returns the neutral's cell mask per
    layer and the pion's label per event."""
    n = len(events["p"])
    e_neutral = rng.uniform(1.0, 10.0, n)
    pion = sum(e.sum(axis=(1, 2)) for e in events["energy"])
    pion_label = (e_neutral > pion).astype(int)
    masks = []
    for l in range(6):
        share = (0.3, 0.6, 0.1, 0.0, 0.0, 0.0)[l]
        deposit = _gaussians(np.full(n, centre[0]), np.full(n, centre[1]), LATERAL[l], l, share * e_neutral)
        mask = deposit > 0
        assert not (mask & (events["labels"][l] >= 0)).any()  # the two clusters do not touch
        events["energy"][l] = events["energy"][l] + deposit
        events["labels"][l] = np.where(mask, 1 - pion_label[:, None, None],
                                       np.where(events["labels"][l] >= 0, pion_label[:, None, None], -1))
        masks.append(mask)
    return masks, pion_label


def run(templates, events):
    return subtract(templates, events["energy"], events["labels"], events["p"], events["eta"], events["phi"])


@pytest.fixture(scope="module")
def fitted():
    events = pion_showers(np.random.default_rng(1), 2000)
    templates = fit_templates(events["energy"], events["labels"], events["p"], events["eta"], events["phi"], GEOMETRY,
                              P_BINS, MIN_BIN_ENTRIES)
    return templates, events


# ---- hand-made events -------------------------------------------------------------------------------------------

def empty_events(n=1, p=8.0):
    return {"energy": [np.zeros((n, h, w)) for h, w in GEOMETRY.layer_shapes],
            "labels": [np.full((n, h, w), -1) for h, w in GEOMETRY.layer_shapes],
            "p": np.full(n, p), "eta": np.zeros((n, 6)), "phi": np.zeros((n, 6))}


def put_block(events, layer, inner, outer, label=0, event=0):
    """A 4 x 4 block of cells around the window centre in a layer: the inner 2 x 2 cells
    (Delta R < the ring width, ring 0 for EM2 and HAD1) get ``inner`` GeV each, the 12
    around them (ring 1 in EM2, ring 0 in HAD1) ``outer`` GeV each."""
    h, w = GEOMETRY.layer_shapes[layer]
    block = np.full((4, 4), float(outer))
    block[1:3, 1:3] = inner
    events["energy"][layer][event, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = block
    events["labels"][layer][event, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = label


def constant_templates(mean, sigma, density=None):
    """Templates equal in every (p, LFI) bin; ``density(layer, ring)`` the profile, by
    default decreasing with the ring index with EM2 above every other layer."""
    density = density or (lambda layer, k: (10.0 if layer == EM2 else 1.0) / (1.0 + k))
    profile = tuple(np.broadcast_to(np.array([density(l, k) for k in range(GEOMETRY.n_rings(l))]),
                                    (1, 6, GEOMETRY.n_rings(l))).copy() for l in range(6))
    return Templates(geometry=GEOMETRY, p_edges=np.array([0.0, 100.0]), mean=np.full((1, 6), mean),
                     sigma=np.full((1, 6), sigma), counts=np.zeros((1, 6), np.int64),
                     source=np.zeros((1, 6), np.int64), profile=profile, inclusive_mean=mean, inclusive_sigma=sigma)


def test_hand_made_rings_are_the_expected_cells():
    # The block's inner 4 cells are ring 0 in EM2 (distance 0.0088 < 0.018), the outer 12 ring 1.
    eta_c, phi_c = GEOMETRY.cell_centres(EM2)
    d = np.hypot(*np.meshgrid(eta_c[30:34], phi_c[30:34], indexing="ij"))
    assert GEOMETRY.ring_index(EM2, d, 0 * d).tolist() == [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]


def test_expected_energy_of_the_first_ring_removes_exactly_its_cells():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)  # ring 0: 3 GeV, ring 1: 3 GeV
    remaining, info = run(constant_templates(mean=0.375, sigma=0.125), events)  # E_exp = 3 GeV, 1.5 sigma = 1.5 GeV
    expected = events["energy"][EM2].copy()
    expected[0, 31:33, 31:33] = 0.0
    assert np.array_equal(remaining[EM2], expected)
    assert BRANCHES[info.branch[0]] == "rings" and info.matched_cluster[0] == 0
    assert info.e_expected[0] == 3.0 and info.e_removed[0] == 3.0 and info.e_cluster[0] == 6.0
    assert info.first_interaction_layer[0] == EM2


def test_last_ring_is_scaled_by_the_fraction_needed():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)
    remaining, info = run(constant_templates(mean=0.5, sigma=0.125), events)  # E_exp = 4: ring 0 (3) + 1/3 of ring 1
    block = remaining[EM2][0, 30:34, 30:34]
    assert np.allclose(block[1:3, 1:3], 0.0)
    outer = np.ones((4, 4), bool)
    outer[1:3, 1:3] = False
    assert np.allclose(block[outer], 0.25 * (1 - 1 / 3), rtol=1e-12)
    assert info.e_removed[0] == pytest.approx(4.0, rel=1e-12) and BRANCHES[info.branch[0]] == "rings"


def test_rings_are_ranked_by_expected_density_across_layers():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)
    put_block(events, HAD1, inner=0.75, outer=0.0)  # HAD1 ring 0: the inner 4 cells, 3 GeV
    events["labels"][HAD1][0, 6:10, 6:10] = np.where(events["energy"][HAD1][0, 6:10, 6:10] > 0, 0, -1)
    had_first = constant_templates(0.375, 0.125, density=lambda layer, k: (100.0 if layer == HAD1 else 1.0) / (1 + k))
    remaining, info = run(had_first, events)  # E_exp = 3: all of HAD1's ring 0, nothing of EM2
    assert np.allclose(remaining[HAD1], 0.0)
    assert np.array_equal(remaining[EM2], events["energy"][EM2])
    assert info.e_removed[0] == 3.0


def test_cluster_below_expectation_is_removed_whole():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)  # 6 GeV < E_exp = 6.4 GeV
    remaining, info = run(constant_templates(mean=0.8, sigma=0.1), events)
    assert all(np.array_equal(r, np.zeros_like(r)) for r in remaining)
    assert BRANCHES[info.branch[0]] == "whole_cluster" and info.e_removed[0] == 6.0
    assert info.e_expected[0] == pytest.approx(6.4)


@pytest.mark.parametrize("sigma_over_p, removed", [(2.1 / 12, True), (1.9 / 12, False)])
def test_remnant_removed_below_one_and_a_half_sigma_only(sigma_over_p, removed):
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)
    # E_exp = 4, remnant 2 GeV; 1.5 sigma = 1.5 * 8 * sigma_over_p = 2.1 (removed) or 1.9 GeV (kept).
    remaining, info = run(constant_templates(mean=0.5, sigma=sigma_over_p), events)
    left = sum(r.sum() for r in remaining)
    if removed:
        assert left == 0.0 and BRANCHES[info.branch[0]] == "rings_remnant" and info.e_removed[0] == 6.0
    else:
        assert left == pytest.approx(2.0) and BRANCHES[info.branch[0]] == "rings"


def test_cluster_below_a_tenth_of_p_is_not_matched():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.1, outer=0.03)  # 0.76 GeV < 0.8 GeV = 0.1 p
    remaining, info = run(constant_templates(0.375, 0.125), events)
    assert all(np.array_equal(r, e) for r, e in zip(remaining, events["energy"]))
    assert BRANCHES[info.branch[0]] == "no_match" and info.matched_cluster[0] == -1 and info.e_removed[0] == 0.0
    assert np.isnan(info.e_expected[0]) and info.first_interaction_layer[0] == -1


def test_event_without_track_is_untouched():
    events = empty_events(p=8.0)
    put_block(events, EM2, inner=0.75, outer=0.25)
    events["p"][0] = np.nan
    events["eta"][0] = events["phi"][0] = np.nan
    remaining, info = run(constant_templates(0.375, 0.125), events)
    assert all(np.array_equal(r, e) for r, e in zip(remaining, events["energy"]))
    assert BRANCHES[info.branch[0]] == "no_track" and info.p_bin[0] == -1 and info.e_removed[0] == 0.0


def test_first_interaction_layer_is_the_largest_density_increase():
    depth = GEOMETRY.depth_lambda  # 0.18, 0.8, 0.22, 1.5, 4.1, 1.8
    energies = np.array([
        [0.05, 0.2, 0.02, 5.0, 2.0, 0.5],   # densities 0.28, 0.25, 0.09, 3.3, ...: HAD1
        [1.0, 5.0, 0.5, 0.5, 0.1, 0.0],     # 5.6 then +0.7: EM1
        [-0.3, 0.0, 0.3, 0.1, 0.0, 0.0],    # negative EM1 is no deposit: EM3 (1.4 / lambda)
        [0.0, 0.0, 0.0, 0.0, 0.0, 2.0],     # HAD3
        [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # nothing deposited
    ])
    assert first_interaction_layer(energies, depth).tolist() == [3, 0, 2, 5, -1]


# ---- templates ----------------------------------------------------------------------------------------------------

def test_templates_recover_the_response_and_a_falling_profile(fitted):
    templates, events = fitted
    assert abs(templates.inclusive_mean - R_MEAN) < 0.01
    assert templates.inclusive_mean == pytest.approx(events["r"].mean(), rel=1e-9)  # one cluster holds all energy
    assert templates.inclusive_sigma == pytest.approx(R_SIGMA, rel=0.1)
    # Every event matched, and the measured LFI is the generated one.
    assert templates.counts.sum() == 2000
    assert np.array_equal(templates.counts.sum(axis=0), np.bincount(events["start"], minlength=6))
    own = templates.source == SOURCES.index("own")
    assert own.sum() > 20
    pull = (templates.mean[own] - R_MEAN) / (R_SIGMA / np.sqrt(templates.counts[own]))
    assert np.abs(pull).max() < 5
    # The ring profile falls from the track outwards in every layer the shower reaches.
    b, lfi = np.unravel_index(np.argmax(templates.counts), templates.counts.shape)
    for layer in range(lfi, 6):
        density = templates.profile[layer][b, lfi]
        assert np.all(np.diff(density[:4]) < 0), (layer, density[:6])
        assert density[-1] == 0.0


def test_sparse_bins_fall_back_in_the_documented_order():
    events = pion_showers(np.random.default_rng(2), 200, start=HAD1, p_range=(2.0, 3.0))
    more = pion_showers(np.random.default_rng(3), 30, start=EM2, p_range=(3.0, 4.0))
    merged = {k: ([np.concatenate([a, b]) for a, b in zip(events[k], more[k])] if k in ("energy", "labels")
                  else np.concatenate([events[k], more[k]])) for k in events}
    t = fit_templates(merged["energy"], merged["labels"], merged["p"], merged["eta"], merged["phi"], GEOMETRY,
                      p_bins=(2.0, 3.0, 4.0, 5.0), min_entries=20)
    # Bins (p, LFI): (0, HAD1) and (1, EM2) have their own events, (2, HAD1) takes the nearest p bin's,
    # (2, EM2) likewise; (0, EM1) takes p bin 0's pooled events; (2, EM1) has no p-bin events: inclusive.
    src = np.asarray(SOURCES)[t.source]
    assert src[0, HAD1] == "own" and src[1, EM2] == "own"
    assert src[1, HAD1] == src[2, HAD1] == src[0, EM2] == src[2, EM2] == "neighbour_p_bin"
    assert src[0, 0] == src[1, 0] == "p_bin_all_lfi" and src[2, 0] == "inclusive"
    assert t.mean[2, HAD1] == t.mean[1, HAD1] == t.mean[0, HAD1]
    assert t.mean[0, EM2] == t.mean[2, EM2] == t.mean[1, EM2]
    assert np.array_equal(t.profile[HAD1][2, HAD1], t.profile[HAD1][0, HAD1])
    assert t.mean[0, 0] == t.mean[0, HAD1]  # p bin 0 holds only LFI = HAD1 events
    assert t.mean[2, 0] == pytest.approx(t.inclusive_mean) and t.sigma[2, 0] == pytest.approx(t.inclusive_sigma)
    assert t.counts[0, HAD1] == 200 and t.counts[1, EM2] == 30 and t.counts.sum() == 230


def test_templates_json_round_trip(fitted, tmp_path):
    templates, _ = fitted
    assert Templates.from_json(templates.to_json()) == templates
    path = templates.save(tmp_path / "sub" / "templates.json")
    assert Templates.load(path) == templates
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left behind
    other = Templates.from_json(templates.to_json().replace('"inclusive_sigma": ', '"inclusive_sigma": 1'))
    assert other != templates
    with pytest.raises(ValueError, match="version"):
        Templates.from_json(templates.to_json().replace('"version": 1', '"version": 99'))


# ---- the subtraction on synthetic samples --------------------------------------------------------------------------

def test_pion_only_events_are_emptied_within_the_template_resolution(fitted):
    templates, _ = fitted
    events = pion_showers(np.random.default_rng(11), 1000)
    remaining, info = run(templates, events)
    assert not np.isin(info.branch, [BRANCHES.index("no_track"), BRANCHES.index("no_match")]).any()
    left = sum(r.sum(axis=(1, 2)) for r in remaining) / events["p"]  # the neutral estimate / p, truly 0
    sigma = templates.inclusive_sigma
    # Whole removal below E_exp, remnant removal up to 1.5 sigma above: only the upper tail remains.
    assert abs(left.mean()) < 0.25 * sigma and left.std() < sigma
    assert np.all(left >= -1e-12)
    rings = info.branch == BRANCHES.index("rings")
    assert np.allclose(info.e_removed[rings], info.e_expected[rings], rtol=1e-9)
    assert np.all(info.e_cluster[rings] - info.e_expected[rings] >= 1.5 * info.sigma_expected[rings])


def test_far_neutral_cluster_is_never_touched(fitted):
    templates, _ = fitted
    rng = np.random.default_rng(12)
    events = pion_showers(rng, 300)
    neutral, pion_label = add_neutral(rng, events)
    assert 0 < pion_label.sum() < 300  # the neutral cluster is the more energetic one in some events
    remaining, info = run(templates, events)
    for r, e, mask in zip(remaining, events["energy"], neutral):
        assert np.array_equal(r[mask], e[mask])
    assert np.array_equal(info.matched_cluster, pion_label)
    assert set(np.asarray(BRANCHES)[info.branch]) >= {"whole_cluster", "rings_remnant"}
    # Without the pion, the far cluster alone is too far (Delta R' > 1.64 widths) to be matched.
    alone = {**events, "energy": [np.where(m, e, 0.0) for e, m in zip(events["energy"], neutral)],
             "labels": [np.where(m, 0, -1) for m in neutral]}
    remaining, info = run(templates, alone)
    assert np.all(info.branch == BRANCHES.index("no_match"))
    assert all(np.array_equal(r, e) for r, e in zip(remaining, alone["energy"]))


def test_match_track_and_geometry_checks(fitted):
    templates, events = fitted
    match = match_track(events["energy"], events["labels"], events["p"], events["eta"], events["phi"], GEOMETRY)
    assert np.all(match.matched == 0) and np.all(match.distance < 1.64)
    assert np.allclose(match.cluster_energy, events["p"] * events["r"])
    with pytest.raises(ValueError, match="differs"):
        subtract(templates, events["energy"], events["labels"], events["p"], events["eta"], events["phi"],
                 geometry=dataclasses.replace(GEOMETRY, ring_widths=(0.05,) * 6))
    with pytest.raises(ValueError, match=r"energy\[1\]"):
        subtract(templates, [events["energy"][0]] * 6, events["labels"], events["p"], events["eta"], events["phi"])
    window = SimpleNamespace(shapes=list(GEOMETRY.layer_shapes), window=list(GEOMETRY.window),
                             depth_lambda=lambda: np.array(GEOMETRY.depth_lambda))
    assert CellGeometry.from_window_geometry(window, ATLAS_RING_WIDTHS) == GEOMETRY


def test_chunking_does_not_change_the_result(fitted):
    templates, _ = fitted
    rng = np.random.default_rng(13)
    events = pion_showers(rng, 50)
    add_neutral(rng, events)
    events["p"][3] = np.nan
    whole, info = run(templates, events)
    chunked, info_chunked = subtract(templates, events["energy"], events["labels"], events["p"], events["eta"],
                                     events["phi"], chunk_events=7)
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunked))
    for name in info.__dataclass_fields__:
        assert np.array_equal(getattr(info, name), getattr(info_chunked, name), equal_nan=True), name
    # float32 inputs give float32 outputs, and no events give empty results.
    remaining, _ = run(templates, {**events, "energy": [e.astype(np.float32) for e in events["energy"]]})
    assert all(r.dtype == np.float32 for r in remaining)
    none = {k: ([v[:0] for v in events[k]] if k in ("energy", "labels") else events[k][:0]) for k in events}
    remaining, info = run(templates, none)
    assert [r.shape for r in remaining] == [(0, *s) for s in GEOMETRY.layer_shapes] and info.branch.size == 0
