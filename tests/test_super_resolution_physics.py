"""The super-resolution study's non-learned methods, physics observables and image metrics
on hand-made images: energy conservation of the interpolations per detector cell, the
two-photon split of Gaussian blobs placed by hand, the diphoton mass against explicit
four-vectors, and the metrics' conventions (PSNR, SSIM, energy closure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.studies.super_resolution.interpolation import (
    FUNCTIONS,
    bicubic,
    bicubic_shares,
    super_resolve,
    to_coarse,
    uniform,
)
from pipeline.studies.super_resolution.methods import INTERPOLATIONS
from pipeline.studies.super_resolution.metrics import IMAGE_METRICS, ImageMetrics, physics_row
from pipeline.studies.super_resolution.physics import (
    cell_centres,
    diphoton_mass,
    local_maxima,
    mass_summary,
    neutral_fractions,
    shower_shapes,
    split_mass,
    two_cluster_split,
)

FINE = 64
#: The default window (eta, phi) [rad] is not needed: any window works; this one has 0.00625 rad cells.
WINDOW = (0.4, 0.4)
CELL = WINDOW[0] / FINE
#: The default detector's blocks: em1 (1, 2), em2 and em3 (2, 2), had (4, 4), (4, 4), (8, 8), and the identity.
FACTORS = [(1, 2), (2, 2), (4, 4), (8, 8), (1, 1)]


def coarse_images(factors, seed: int, noisy: bool) -> torch.Tensor:
    """(5, 64 / fe, 64 / fp) detector cells [GeV]: positive (0-5 GeV) or, ``noisy``, with a
    third of the cells noise around 0 (some negative) and some exactly 0."""
    rng = np.random.default_rng(seed)
    shape = (5, FINE // factors[0], FINE // factors[1])
    energy = rng.uniform(0.01, 5.0, shape)
    if noisy:
        noise = rng.random(shape) < 0.35
        energy = np.where(noise, rng.normal(0.0, 0.1, shape), energy)
        energy[rng.random(shape) < 0.1] = 0.0
        assert (energy < 0).any()
    return torch.tensor(energy, dtype=torch.float32)


def blob(energy: float, eta0: float, phi0: float, sigma: float = 0.01, shape=(FINE, FINE)) -> np.ndarray:
    """A Gaussian shower of ``energy`` [GeV] centred at (eta0, phi0) (window-relative) on
    a grid over WINDOW, whose barycentre is (eta0, phi0) to far better than a cell."""
    eta, phi = cell_centres(shape, WINDOW)
    image = np.exp(-((eta[:, None] - eta0) ** 2 + (phi[None, :] - phi0) ** 2) / (2 * sigma**2))
    return energy * image / image.sum()


def block_sum(image: np.ndarray, factors) -> np.ndarray:
    return to_coarse(torch.as_tensor(image), factors).numpy()


# ---- interpolations -------------------------------------------------------------------------


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("factors", FACTORS)
@pytest.mark.parametrize("method", INTERPOLATIONS)
def test_interpolations_keep_every_detector_cells_energy(method, factors, noisy):
    coarse = coarse_images(factors, seed=sum(factors) + noisy, noisy=noisy)
    fine = FUNCTIONS[method](coarse, factors)
    assert fine.shape == (5, FINE, FINE) and fine.dtype == coarse.dtype
    torch.testing.assert_close(to_coarse(fine, factors), coarse, rtol=1e-5, atol=1e-6)
    if method == "bicubic":
        # Positive cells get a non-negative shape; noise cells (E <= 0) fall back to the uniform share.
        positive = uniform(coarse, factors) > 0
        assert (fine[positive] >= 0).all()
        flat = uniform(coarse, factors)
        noise = ~positive
        torch.testing.assert_close(fine[noise], flat[noise])
        if factors != (1, 1):
            assert not torch.allclose(fine, flat, atol=1e-3)  # it does shape the positive cells


@pytest.mark.parametrize("method", INTERPOLATIONS)
def test_factors_one_are_the_identity(method):
    coarse = coarse_images((1, 1), seed=3, noisy=True)
    assert torch.equal(FUNCTIONS[method](coarse, (1, 1)), coarse)


@pytest.mark.parametrize("factors", [(1, 2), (2, 2), (8, 8)])
def test_bicubic_of_a_constant_density_is_constant(factors):
    coarse = torch.full((2, FINE // factors[0], FINE // factors[1]), 3.0)
    fine = bicubic(coarse, factors)
    torch.testing.assert_close(fine, torch.full((2, FINE, FINE), 3.0 / (factors[0] * factors[1])))


def test_bicubic_follows_a_gradient_within_the_cells():
    """A density rising linearly in eta: within every interior detector cell the fine
    energies rise with eta too (uniform would be flat), and the cell keeps its energy."""
    coarse = torch.arange(1.0, 17.0)[None, :, None].repeat(1, 1, 16)  # (1, 16, 16), E = 1..16 along eta
    fine = bicubic(coarse, (4, 4))
    steps = fine[0, 4:-4].reshape(14, 4, 64).diff(dim=1)
    assert (steps > 0).all()
    torch.testing.assert_close(to_coarse(fine, (4, 4)), coarse)


def test_bicubic_shares_sum_to_one_and_fall_back_to_uniform():
    coarse = coarse_images((4, 4), seed=3, noisy=True)  # noise cells: some negative, most 0
    shares = bicubic_shares(coarse, (4, 4))
    assert (shares >= 0).all()
    torch.testing.assert_close(to_coarse(shares, (4, 4)), torch.ones_like(coarse))
    empty = (coarse <= 0).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert empty.any() and torch.all(shares[empty] == 1 / 16)
    torch.testing.assert_close(shares * coarse.repeat_interleave(4, 1).repeat_interleave(4, 2), bicubic(coarse, (4, 4)))
    assert torch.all(bicubic_shares(coarse, (1, 1)) == 1)


def test_to_coarse_sums_blocks_and_undoes_uniform():
    fine = torch.arange(8.0).reshape(1, 2, 4)
    assert to_coarse(fine, (1, 2)).tolist() == [[[1.0, 5.0], [9.0, 13.0]]]
    assert to_coarse(fine, (2, 2)).tolist() == [[[10.0, 18.0]]]
    assert to_coarse(fine[None], (2, 4)).shape == (1, 1, 1, 1)  # any leading dimensions
    for factors in FACTORS:
        coarse = coarse_images(factors, seed=5, noisy=True)
        torch.testing.assert_close(to_coarse(uniform(coarse, factors), factors), coarse, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="does not divide"):
        to_coarse(torch.zeros(1, 6, 6), (4, 4))


def test_super_resolve_stacks_the_layers():
    layers = [coarse_images(factors, seed=7, noisy=True) for factors in FACTORS]
    assert set(FUNCTIONS) == set(INTERPOLATIONS)
    for method in INTERPOLATIONS:
        fine = super_resolve(method, [layer.numpy() for layer in layers], FACTORS)
        assert fine.shape == (5, len(FACTORS), FINE, FINE)
        for index, (layer, factors) in enumerate(zip(layers, FACTORS)):
            torch.testing.assert_close(fine[:, index], FUNCTIONS[method](layer, factors))
    with pytest.raises(ValueError, match="unknown method 'cnn'"):
        super_resolve("cnn", layers, FACTORS)
    with pytest.raises(ValueError, match="fine images of shapes"):
        super_resolve("uniform", layers, [(2, 2)] * len(layers))


# ---- local maxima and the two-cluster split --------------------------------------------------


def test_local_maxima_count_plateaus_once():
    image = np.zeros((4, 8, 8))
    image[0, 2, 2:4] = 5.0  # a flat pair
    # A V-shaped plateau: its last cell (1, 3) has no equal neighbour before it in raster order.
    image[1, 1, 1] = image[1, 2, 2] = image[1, 1, 3] = 4.0
    image[2, 2:4, 2:4], image[2, 2:4, 4:6] = 3.0, 5.0  # 2 x 2 blocks (an upsampled image): the lower is no maximum
    image[3, 1, 1], image[3, 6, 6] = 2.0, 1.0  # two separate maxima
    image[3, 4, 4] = -1.0  # negative cells are no maxima, and do not make their neighbours ones
    maxima = local_maxima(image)
    assert maxima.sum(axis=(1, 2)).tolist() == [1, 1, 1, 2]
    assert maxima[0, 2, 2] and maxima[2, 2, 4] and maxima[3, 1, 1] and maxima[3, 6, 6]
    assert not local_maxima(np.zeros((1, 4, 4))).any()


def test_split_finds_two_photons_placed_by_hand():
    photons = [(6.0, -0.05, 0.02, 3.0, 0.06, -0.03), (4.0, 0.03, 0.03, 3.6, -0.02, -0.04),
               (8.0, 0.0, -0.05, 2.0, 0.0, 0.05)]
    images = np.stack([blob(e1, a1, b1) + blob(e2, a2, b2) for e1, a1, b1, e2, a2, b2 in photons])
    split = two_cluster_split(images, WINDOW)
    assert split["resolved"].all() and (split["n_maxima"] == 2).all()
    for key, index in (("e1", 0), ("eta1", 1), ("phi1", 2), ("e2", 3), ("eta2", 4), ("phi2", 5)):
        true = np.array([p[index] for p in photons])
        if key.startswith("e") and key[1].isdigit():
            np.testing.assert_allclose(split[key], true, rtol=0.03)
        else:
            np.testing.assert_allclose(split[key], true, atol=0.2 * CELL)
    true_separation = np.array([np.hypot(p[1] - p[4], p[2] - p[5]) for p in photons])
    np.testing.assert_allclose(split["separation"], true_separation, atol=0.3 * CELL)
    assert (split["e1"] >= split["e2"]).all()


def test_split_on_coarse_and_uniformly_upsampled_images():
    """On the 32 x 32 detector cells of em2 and on their uniform upsampling the two photons
    stay resolved, at their positions within a fraction of a detector cell."""
    image = (blob(6.0, -0.05, 0.02) + blob(3.0, 0.06, -0.03))[None]
    coarse = block_sum(image, (2, 2))
    flat = uniform(torch.as_tensor(coarse), (2, 2)).numpy()
    for grid, cell in ((coarse, 2 * CELL), (flat, CELL)):
        split = two_cluster_split(grid, WINDOW)
        assert split["resolved"].tolist() == [True] and split["n_maxima"].tolist() == [2]
        np.testing.assert_allclose([split["eta1"][0], split["phi1"][0], split["eta2"][0], split["phi2"][0]],
                                   [-0.05, 0.02, 0.06, -0.03], atol=0.25 * 2 * CELL)
        np.testing.assert_allclose([split["e1"][0], split["e2"][0]], [6.0, 3.0], rtol=0.03)


def test_split_of_one_photon_a_faint_second_and_empty_events():
    images = np.stack([blob(10.0, 0.01, -0.02), blob(6.0, -0.05, 0.02) + blob(0.3, 0.06, -0.03),
                       np.zeros((FINE, FINE)), -blob(1.0, 0.0, 0.0)])
    split = two_cluster_split(images, WINDOW, min_fraction=0.1)
    assert split["resolved"].tolist() == [False, False, False, False]
    assert split["n_maxima"].tolist() == [1, 2, 0, 0]
    # One photon: the principal-axis start splits it in two halves around its barycentre.
    assert split["e1"][0] + split["e2"][0] == pytest.approx(10.0)
    mean_eta = (split["e1"][0] * split["eta1"][0] + split["e2"][0] * split["eta2"][0]) / 10.0
    assert mean_eta == pytest.approx(0.01, abs=0.05 * CELL)
    # The faint second photon (5 % of the first) is resolved at a lower threshold.
    assert two_cluster_split(images[1:2], WINDOW, min_fraction=0.04)["resolved"].tolist() == [True]
    np.testing.assert_allclose([split["e1"][1], split["e2"][1]], [6.0, 0.3], rtol=0.05)
    for key in ("eta1", "phi1", "eta2", "phi2", "separation"):
        assert np.isnan(split[key][2:]).all()
    assert (split["e1"][2:] == 0).all()


# ---- diphoton mass, shower shapes, mass summary ----------------------------------------------


def four_vector_mass(e1, eta1, phi1, e2, eta2, phi2):
    def p(e, eta, phi):
        return e * np.array([np.cos(phi) / np.cosh(eta), np.sin(phi) / np.cosh(eta), np.tanh(eta)])
    total = p(e1, eta1, phi1) + p(e2, eta2, phi2)
    return np.sqrt((e1 + e2) ** 2 - total @ total)


def test_diphoton_mass_of_a_symmetric_pi0():
    """A 10 GeV pi0 decaying symmetrically at eta = 0: opening angle 2 asin(m / E)."""
    m_pi0, energy = 0.1349768, 10.0
    alpha = 2 * np.arcsin(m_pi0 / energy)
    half = np.array([alpha / 2])
    mass = diphoton_mass(np.array([5.0]), np.array([5.0]), np.zeros(1), half, np.zeros(1), -half,
                         np.zeros(1), np.array([2.5]))
    assert mass[0] == pytest.approx(m_pi0, rel=1e-9)
    assert mass[0] == pytest.approx(np.sqrt(2 * 25 * (1 - np.cos(alpha))), rel=1e-9)


def test_diphoton_mass_against_four_vectors():
    rng = np.random.default_rng(2)
    n = 50
    e1, e2 = rng.uniform(1, 10, n), rng.uniform(1, 10, n)
    rel = rng.uniform(-0.2, 0.2, (4, n))
    window_eta, window_phi = rng.uniform(-1.5, 1.5, n), rng.uniform(-3.1, 3.1, n)
    mass = diphoton_mass(e1, e2, *rel, window_eta, window_phi)
    expected = [four_vector_mass(e1[i], window_eta[i] + rel[0, i], window_phi[i] + rel[1, i], e2[i],
                                 window_eta[i] + rel[2, i], window_phi[i] + rel[3, i]) for i in range(n)]
    np.testing.assert_allclose(mass, expected, rtol=1e-6)
    assert np.isnan(diphoton_mass(np.ones(1), np.zeros(1), np.zeros(1), np.zeros(1), np.full(1, np.nan),
                                  np.full(1, np.nan), np.zeros(1), np.zeros(1))).all()


def test_split_mass_of_two_blobs():
    """Two photons of 5 GeV at eta 0.5 + -0.03, 0.03: the mass of the split is that of the
    photons within the 1 % their energies and positions allow."""
    image = (blob(5.0, -0.03, 0.0) + blob(5.0, 0.03, 0.0))[None]
    out = split_mass(image, WINDOW, np.array([0.5]), np.array([1.0]))
    assert out["mass"][0] == pytest.approx(four_vector_mass(5.0, 0.47, 1.0, 5.0, 0.53, 1.0), rel=0.01)


def test_shower_shapes_of_a_hand_made_image():
    image = np.zeros((2, 4, 4))
    image[0, 1, 1], image[0, 1, 3], image[0, 2, 0] = 1.0, 3.0, -2.0  # the negative cell does not count
    window = (0.4, 0.8)  # cells of 0.1 x 0.2: centres eta -0.15, -0.05, ..., phi -0.3, -0.1, 0.1, 0.3
    shapes = shower_shapes(image, window)
    assert shapes["energy"][0] == pytest.approx(4.0)
    assert shapes["eta"][0] == pytest.approx(-0.05)
    assert shapes["phi"][0] == pytest.approx((1 * -0.1 + 3 * 0.3) / 4)
    # distances to the barycentre phi 0.2: 0.3 and 0.1
    assert shapes["width"][0] == pytest.approx(np.sqrt((1 * 0.3**2 + 3 * 0.1**2) / 4))
    assert all(np.isnan(shapes[key][1]) for key in ("eta", "phi", "width")) and shapes["energy"][1] == 0


def test_neutral_fractions_of_the_detector_cells():
    neutral, charged = np.zeros((1, 4, 4)), np.zeros((1, 4, 4))
    neutral[0, 0, 0], charged[0, 1, 1] = 1.0, 3.0  # cell (0, 0): a quarter neutral
    neutral[0, 2, 3] = 2.0  # cell (1, 1): all neutral; cell (0, 1) and (1, 0) empty: 0
    fractions = neutral_fractions(neutral, charged, (2, 2))
    np.testing.assert_allclose(fractions, [[[0.25, 0.0], [0.0, 1.0]]])
    # The neutral barycentre of an image whose cells carry these fractions: a perfectly placed
    # photon in the all-neutral cell counts whole, the mixed cell's energy a quarter.
    image = np.zeros((1, 4, 4))
    image[0, 2, 3], image[0, 0, 0] = 2.0, 4.0
    weighted = image * fractions.repeat(2, axis=1).repeat(2, axis=2)
    shapes = shower_shapes(weighted, (0.4, 0.4))
    assert shapes["energy"][0] == pytest.approx(3.0)
    assert shapes["eta"][0] == pytest.approx((2 * 0.05 + 1 * -0.15) / 3)


def test_mass_summary_of_a_gaussian():
    rng = np.random.default_rng(4)
    mass = np.concatenate([rng.normal(0.135, 0.01, 40_000), [np.nan, np.inf]])
    summary = mass_summary(mass)
    assert summary["n"] == 40_000
    assert summary["peak"] == pytest.approx(0.135, abs=3e-4)
    assert summary["width"] == pytest.approx(0.01, rel=0.03)
    assert np.isnan(mass_summary(np.full(3, np.nan))["peak"])


# ---- image metrics ---------------------------------------------------------------------------


def truth_batch(seed: int, n: int = 4) -> torch.Tensor:
    """(n, 2, 64, 64) fine truth: a random pair of photons per event in both layers."""
    rng = np.random.default_rng(seed)
    events = [blob(rng.uniform(2, 8), *rng.uniform(-0.1, 0.1, 2)) + blob(rng.uniform(1, 4), *rng.uniform(-0.1, 0.1, 2))
              for _ in range(n)]
    return torch.tensor(np.stack([events, events], axis=1), dtype=torch.float32)


LAYER_FACTORS = [(1, 2), (2, 2)]


def coarse_of(truth: torch.Tensor) -> list[torch.Tensor]:
    return [to_coarse(truth[:, index], factors) for index, factors in enumerate(LAYER_FACTORS)]


def test_image_metrics_of_an_exact_prediction():
    """PSNR of an image with itself is +inf (torchmetrics: 10 log10(1 / 0)); SSIM is 1."""
    truth = truth_batch(0)
    metrics = ImageMetrics(2, ["em1", "em2"])
    metrics.update(truth, truth, coarse_of(truth), LAYER_FACTORS)
    rows = metrics.per_layer()
    assert [row["layer"] for row in rows] == ["em1", "em2"] and rows[0]["n_events"] == 4
    for row in rows:
        assert set(IMAGE_METRICS) <= set(row)
        assert row["mse"] == 0 and row["psnr"] == np.inf
        assert row["ssim"] == pytest.approx(1.0, abs=1e-5)
        assert row["energy_closure"] == pytest.approx(0, abs=1e-6) and row["energy_bias"] == pytest.approx(0, abs=1e-6)


def test_image_metrics_of_a_noisy_prediction_by_hand():
    truth = truth_batch(1, n=1)
    noise = 0.01 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    pred = truth + noise
    metrics = ImageMetrics(2)
    metrics.update(pred, truth, coarse_of(truth), LAYER_FACTORS)
    rows = metrics.per_layer()
    assert [row["layer"] for row in rows] == [0, 1]
    scale = truth[0, 0].max().double()
    mse = (noise[0, 0].double() ** 2).mean()
    assert rows[0]["mse"] == pytest.approx(float(mse), rel=1e-5)
    assert rows[0]["psnr"] == pytest.approx(float(10 * torch.log10(scale**2 / mse)), rel=1e-5)
    assert np.isfinite(rows[0]["psnr"]) and 0 < rows[0]["ssim"] < 0.999
    closure = (to_coarse(noise[0, 0], (1, 2)).abs().sum() / truth[0, 0].sum()).item()
    assert rows[0]["energy_closure"] == pytest.approx(closure, rel=1e-4)
    bias = (noise[0, 0].sum() / truth[0, 0].sum()).item()
    assert rows[0]["energy_bias"] == pytest.approx(bias, rel=1e-4, abs=1e-7)


def test_energy_closure_of_uniform_and_of_a_method_moving_energy():
    truth = truth_batch(2)
    coarse = coarse_of(truth)
    flat = torch.stack([uniform(layer, factors) for layer, factors in zip(coarse, LAYER_FACTORS)], dim=1)
    moved = torch.roll(flat, shifts=5, dims=2)  # the same total, shifted across detector cells
    rows = {}
    for name, pred in (("uniform", flat), ("moved", moved), ("double", 2 * flat)):
        metrics = ImageMetrics(2)
        metrics.update(pred, truth, coarse, LAYER_FACTORS)
        rows[name] = metrics.per_layer()
    for layer in range(2):
        assert rows["uniform"][layer]["energy_closure"] == pytest.approx(0, abs=1e-5)
        assert rows["uniform"][layer]["energy_bias"] == pytest.approx(0, abs=1e-5)
        assert rows["moved"][layer]["energy_closure"] > 0.5
        assert rows["moved"][layer]["energy_bias"] == pytest.approx(0, abs=1e-4)
        assert rows["double"][layer]["energy_closure"] == pytest.approx(1, rel=1e-5)
        assert rows["double"][layer]["energy_bias"] == pytest.approx(1, rel=1e-5)
        assert rows["uniform"][layer]["ssim"] < 1 and rows["uniform"][layer]["mse"] > 0


def test_image_metrics_stream_and_skip_empty_events():
    """Two batches give the one batch's means; an event without truth (or coarse) energy
    counts in the MSE only."""
    truth = truth_batch(3, n=6)
    pred = truth.roll(shifts=1, dims=3)
    whole, parts = ImageMetrics(2), ImageMetrics(2)
    whole.update(pred, truth, coarse_of(truth), LAYER_FACTORS)
    for rows in (slice(0, 2), slice(2, 6)):
        parts.update(pred[rows], truth[rows], coarse_of(truth[rows]), LAYER_FACTORS)
    for a, b in zip(whole.per_layer(), parts.per_layer()):
        for key in IMAGE_METRICS:
            assert a[key] == pytest.approx(b[key], rel=1e-6)
    padded = ImageMetrics(2)
    empty = torch.zeros(2, 2, FINE, FINE)
    padded.update(torch.cat([pred, empty + 0.1]), torch.cat([truth, empty]), coarse_of(torch.cat([truth, empty])),
                  LAYER_FACTORS)
    for a, b in zip(whole.per_layer(), padded.per_layer()):
        for key in ("psnr", "ssim", "energy_closure", "energy_bias"):
            assert a[key] == pytest.approx(b[key], rel=1e-6)
        assert b["mse"] == pytest.approx((6 * a["mse"] + 2 * 0.01) / 8, rel=1e-5)
    with pytest.raises(ValueError, match="expected both"):
        whole.update(pred[:, :1], truth, coarse_of(truth), LAYER_FACTORS)


def test_physics_row_by_hand():
    split = {"resolved": np.array([True, True, False, True]), "mass": np.array([0.13, 0.14, 0.5, np.nan]),
             "separation": np.array([0.02, 0.03, 0.0, 0.05])}
    truth = {"resolved": np.array([True, False, True, True]), "separation": np.array([0.025, 0.02, 0.01, 0.04])}
    row = physics_row(split, truth)
    assert row["n_events"] == 4 and row["resolved_fraction"] == 0.75
    assert row["mass_n"] == 2 and row["mass_peak"] == pytest.approx(0.135)
    assert row["mass_width"] == pytest.approx(0.005 / 1.349)
    # resolved by both: events 0 and 3, residuals -0.005 and 0.01
    assert row["separation_residual_median"] == pytest.approx(0.0025)
    assert row["separation_residual_iqr"] == pytest.approx(0.0075)
    selected = physics_row(split, select=np.array([False, False, True, True]))
    assert selected["resolved_fraction"] == 0.5 and "separation_residual_median" not in selected


def test_a_layer_with_only_a_stray_deposit_is_left_out_of_psnr_and_ssim():
    """Normalised by a truth peak of 1e-20 GeV the readout's noise would give PSNR -inf."""
    truth = truth_batch(4, n=3)
    pred = truth + 0.001
    stray = torch.zeros(1, 2, FINE, FINE)
    stray[0, :, 3, 3] = 1e-20
    clean, dirty = ImageMetrics(2), ImageMetrics(2)
    clean.update(pred, truth, coarse_of(truth), LAYER_FACTORS)
    dirty.update(torch.cat([pred, stray + 0.01]), torch.cat([truth, stray]), coarse_of(torch.cat([truth, stray])),
                 LAYER_FACTORS)
    for a, b in zip(clean.per_layer(), dirty.per_layer()):
        assert np.isfinite(b["psnr"]) and b["psnr"] == pytest.approx(a["psnr"], rel=1e-6)
        assert b["ssim"] == pytest.approx(a["ssim"], rel=1e-6)
