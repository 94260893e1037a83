"""The super-resolution study's physics observables (NumPy, vectorised over events): does
an image resolve the two photons of a neutral pion, where are they, what mass do they make.

An image is (B, h, w) energies [GeV] of an h x w grid of cells over the window
(size_eta, size_phi) (the fine grid or a layer's detector cells); cell (i, j) has the
window-relative centre (-size_eta / 2 + (i + 1/2) size_eta / h, -size_phi / 2 + (j + 1/2) size_phi / w).
Only cells with a positive energy count (noise goes both ways and has no position).

* local maxima: the plateaus of equal positive cells (8-connected) none of whose 8
  neighbours is higher, each counted once; ``resolved``: a second local maximum has at
  least ``min_fraction`` of the highest one's energy;
* the two-cluster split: an energy-weighted 2-means (Lloyd) of the positive cells in
  (eta, phi), started at the two highest maxima, or with a single maximum at the
  barycentre +- the RMS along the principal axis of the energy distribution; e1 >= e2 the
  clusters' energies, (eta1, phi1), (eta2, phi2) their barycentres;
* the diphoton mass of two massless photons from the origin, m = sqrt(2 e1 e2 (1 - cos alpha)),
  computed as sqrt(e1 e2) |u1 - u2| (the same for unit vectors, and exact at small angles),
  u = (cos phi / cosh eta, sin phi / cosh eta, tanh eta) at the absolute eta, phi;
* the shower shape: the energy barycentre and width sqrt(sum e r^2 / sum e) [rad],
  r the distance in (eta, phi) to the barycentre; the neutral-energy barycentre: that of
  an image's cells times their detector cell's true neutral fraction (``neutral_fractions``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The 8 neighbours' offsets (d_eta, d_phi).
_NEIGHBOURS = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj)
#: A Gaussian's IQR in units of its sigma (2 x 0.6745).
IQR_PER_SIGMA = 1.349


def cell_centres(shape: Sequence[int], window: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(h,) eta and (w,) phi window-relative cell centres [rad] of an h x w grid over the window."""
    (h, w), (size_eta, size_phi) = shape, window
    return ((np.arange(h) + 0.5) * size_eta / h - size_eta / 2, (np.arange(w) + 0.5) * size_phi / w - size_phi / 2)


def _shifted(array: np.ndarray, fill) -> list[np.ndarray]:
    """The 8 neighbours of every cell of (B, h, w), ``fill`` beyond the edges: n[k][b, i, j] = array[b, i + di, j + dj]."""
    h, w = array.shape[1:]
    padded = np.pad(array, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    return [padded[:, 1 + di : 1 + di + h, 1 + dj : 1 + dj + w] for di, dj in _NEIGHBOURS]


def local_maxima(images: np.ndarray) -> np.ndarray:
    """(B, h, w) bool: one cell (the first in raster order) of every local-maximum plateau
    of the images (module docstring)."""
    energy = np.asarray(images, np.float64)
    n, h, w = energy.shape
    around = _shifted(energy, -np.inf)
    candidate = (energy > 0) & np.all([energy >= other for other in around], axis=0)
    # Neighbouring candidates are equal, so a plateau's candidates are 8-connected; the plateau is no
    # maximum if one of them touches an equal cell that has a higher neighbour (a non-candidate).
    equal_outside = [(energy == other) & ~c for other, c in zip(around, _shifted(candidate, True))]
    rejected = candidate & np.any(equal_outside, axis=0)
    while True:  # spread the rejection over each plateau: as many steps as its diameter
        spread = candidate & (rejected | np.any(_shifted(rejected, False), axis=0))
        if np.array_equal(spread, rejected):
            break
        rejected = spread
    maximum = candidate & ~rejected
    # One cell per plateau: the smallest raster index of each connected set wins (min-label propagation).
    index = np.broadcast_to(np.arange(h * w).reshape(h, w), (n, h, w))
    label = np.where(maximum, index, h * w)
    while True:
        smallest = np.where(maximum, np.minimum(label, np.min(_shifted(label, h * w), axis=0)), h * w)
        if np.array_equal(smallest, label):
            break
        label = smallest
    return maximum & (label == index)


def _barycentre(weights: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(total, eta, phi) of weights (..., h, w) >= 0; NaN positions where the total is 0."""
    total = weights.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        b_eta = np.where(total > 0, (weights.sum(axis=-1) @ eta) / total, np.nan)
        b_phi = np.where(total > 0, (weights.sum(axis=-2) @ phi) / total, np.nan)
    return total, b_eta, b_phi


def shower_shapes(images: np.ndarray, window: Sequence[float], centre: tuple[np.ndarray, np.ndarray] | None = None,
                  radius: float | None = None) -> dict[str, np.ndarray]:
    """(B,) ``energy`` [GeV] (sum of positive cells), barycentre ``eta``, ``phi``
    (window-relative) and ``width`` [rad] (module docstring) of images (B, h, w) [GeV]; NaN where empty.

    With ``centre`` ((B,) eta, (B,) phi, window-relative) and ``radius`` [rad], only the cells
    whose centres lie within ``radius`` of the event's centre count: a shower's shape
    without the noise cells of the readout far from it (as ATLAS's widths use a few cells
    around the hottest one)."""
    weights = np.clip(np.asarray(images, np.float64), 0, None)
    eta, phi = cell_centres(weights.shape[1:], window)
    if centre is not None:
        c_eta, c_phi = (np.asarray(c, np.float64)[:, None, None] for c in centre)
        near = (eta[None, :, None] - c_eta) ** 2 + (phi[None, None, :] - c_phi) ** 2 <= radius**2
        weights = np.where(near, weights, 0.0)
    total, b_eta, b_phi = _barycentre(weights, eta, phi)
    r2 = (eta[None, :, None] - b_eta[:, None, None]) ** 2 + (phi[None, None, :] - b_phi[:, None, None]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        width = np.sqrt(np.sum(weights * r2, axis=(1, 2)) / total)
    return {"energy": total, "eta": b_eta, "phi": b_phi, "width": np.where(total > 0, width, np.nan)}


def neutral_fractions(neutral: np.ndarray, charged: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """(B, h, w) the neutral fraction n / (n + c) of every detector cell of a layer with
    ``factors`` (fe, fp), from the true neutral and charged deposits of its fine cells
    ((B, h fe, w fp) each [GeV]); 0 where the cell has no deposit. What a perfect particle
    flow at the detector's cells knows: super-resolution places each cell's neutral energy."""
    fe, fp = (int(f) for f in factors)
    n, hf, wf = np.shape(neutral)

    def cells(x):
        return np.asarray(x, np.float64).reshape(n, hf // fe, fe, wf // fp, fp).sum(axis=(2, 4))

    neutral_cells, total = cells(neutral), cells(neutral) + cells(charged)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, neutral_cells / total, 0.0)


def two_cluster_split(images: np.ndarray, window: Sequence[float], min_fraction: float = 0.1,
                      iterations: int = 20) -> dict[str, np.ndarray]:
    """The two-photon split (module docstring) of images (B, h, w) [GeV] over the window
    (size_eta, size_phi) [rad].

    Returns (B,) arrays: ``n_maxima`` (int), ``resolved`` (bool), ``e1`` >= ``e2`` [GeV]
    (positive energy of each cluster), ``eta1``, ``phi1``, ``eta2``, ``phi2`` (window-relative
    barycentres [rad]) and ``separation`` = hypot(eta1 - eta2, phi1 - phi2) [rad]. Events
    without positive energy: resolved False, energies 0, NaN positions; a cluster left
    empty (all the energy in one cell, say) has e2 = 0 and NaN position and separation.
    ``iterations``: at most this many Lloyd steps (it stops when no cell changes cluster).
    """
    energy = np.asarray(images, np.float64)
    n, h, w = energy.shape
    eta, phi = cell_centres((h, w), window)
    weights = np.clip(energy, 0, None)
    grid_eta, grid_phi = np.broadcast_to(eta[:, None], (h, w)).ravel(), np.broadcast_to(phi[None, :], (h, w)).ravel()

    maxima = local_maxima(energy).reshape(n, -1)
    peaks = np.where(maxima, energy.reshape(n, -1), -np.inf)
    order = np.argsort(-peaks, axis=1, kind="stable")[:, :2] if h * w > 1 else np.zeros((n, 2), np.int64)
    n_maxima = maxima.sum(axis=1)
    top = np.take_along_axis(peaks, order, axis=1)
    rows = np.arange(n)
    resolved = (n_maxima >= 2) & (top[:, 1] >= min_fraction * top[:, 0])

    # Starting centres: the two highest maxima, else the principal axis of the energy distribution.
    total, b_eta, b_phi = _barycentre(weights, eta, phi)
    flat = weights.reshape(n, -1)
    d_eta, d_phi = grid_eta[None] - b_eta[:, None], grid_phi[None] - b_phi[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        covariance = np.stack([np.stack([np.sum(flat * d_eta * d_eta, 1), np.sum(flat * d_eta * d_phi, 1)], -1),
                               np.stack([np.sum(flat * d_eta * d_phi, 1), np.sum(flat * d_phi * d_phi, 1)], -1)],
                              -2) / total[:, None, None]
    covariance = np.where(total[:, None, None] > 0, covariance, 0.0)
    values, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues: the last is the principal axis
    axis = vectors[:, :, 1] * np.sqrt(np.clip(values[:, 1], 0, None))[:, None]
    two = n_maxima >= 2
    centres = np.empty((n, 2, 2))  # (event, cluster, (eta, phi))
    centres[:, 0, 0] = np.where(two, grid_eta[order[:, 0]], b_eta + axis[:, 0])
    centres[:, 0, 1] = np.where(two, grid_phi[order[:, 0]], b_phi + axis[:, 1])
    centres[:, 1, 0] = np.where(two, grid_eta[order[:, 1]], b_eta - axis[:, 0])
    centres[:, 1, 1] = np.where(two, grid_phi[order[:, 1]], b_phi - axis[:, 1])

    second = np.zeros((n, h * w), bool)
    for _ in range(iterations):
        with np.errstate(invalid="ignore"):
            distance = [(grid_eta[None] - centres[:, k, 0:1]) ** 2 + (grid_phi[None] - centres[:, k, 1:2]) ** 2
                        for k in range(2)]
            assign = distance[1] < distance[0]
        for k, member in enumerate((~assign, assign)):
            e_k = np.sum(flat * member, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                new = np.stack([np.sum(flat * member * grid_eta, 1), np.sum(flat * member * grid_phi, 1)], -1)
                new = new / e_k[:, None]
            centres[:, k] = np.where(e_k[:, None] > 0, new, centres[:, k])  # an emptied cluster stays put
        if np.array_equal(assign, second):
            break
        second = assign

    e = np.stack([np.sum(flat * ~second, axis=1), np.sum(flat * second, axis=1)], axis=1)
    centres = np.where(e[:, :, None] > 0, centres, np.nan)
    swap = e[:, 1] > e[:, 0]
    first = np.where(swap, 1, 0)
    e1, e2 = e[rows, first], e[rows, 1 - first]
    (eta1, phi1), (eta2, phi2) = centres[rows, first].T, centres[rows, 1 - first].T
    return {"n_maxima": n_maxima, "resolved": resolved & (total > 0), "e1": e1, "e2": e2, "eta1": eta1,
            "phi1": phi1, "eta2": eta2, "phi2": phi2, "separation": np.hypot(eta1 - eta2, phi1 - phi2)}


def diphoton_mass(e1: np.ndarray, e2: np.ndarray, eta1: np.ndarray, phi1: np.ndarray, eta2: np.ndarray,
                  phi2: np.ndarray, window_eta: np.ndarray, window_phi: np.ndarray) -> np.ndarray:
    """(B,) invariant mass [GeV] (module docstring) of photons of energies e1, e2 [GeV] at
    window-relative (eta, phi) [rad] in windows centred at (window_eta, window_phi); NaN
    where a position is NaN."""
    def direction(eta, phi):
        eta, phi = np.asarray(window_eta) + eta, np.asarray(window_phi) + phi
        return np.stack([np.cos(phi) / np.cosh(eta), np.sin(phi) / np.cosh(eta), np.tanh(eta)], axis=-1)

    chord = np.linalg.norm(direction(eta1, phi1) - direction(eta2, phi2), axis=-1)
    return np.sqrt(np.clip(np.asarray(e1, np.float64) * np.asarray(e2, np.float64), 0, None)) * chord


def mass_summary(mass: np.ndarray) -> dict[str, float]:
    """``n`` finite masses, their ``peak`` (median) and ``width`` (IQR / 1.349, a Gaussian's sigma) [GeV]; NaN if none."""
    mass = np.asarray(mass, np.float64)
    mass = mass[np.isfinite(mass)]
    if not len(mass):
        return {"n": 0, "peak": float("nan"), "width": float("nan")}
    q25, median, q75 = np.percentile(mass, [25, 50, 75])
    return {"n": int(len(mass)), "peak": float(median), "width": float((q75 - q25) / IQR_PER_SIGMA)}


def split_mass(images: np.ndarray, window: Sequence[float], window_eta: np.ndarray, window_phi: np.ndarray,
               min_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """``two_cluster_split`` of images (B, h, w) [GeV] with its ``mass`` [GeV] (``diphoton_mass``)."""
    split = two_cluster_split(images, window, min_fraction)
    split["mass"] = diphoton_mass(split["e1"], split["e2"], split["eta1"], split["phi1"], split["eta2"],
                                  split["phi2"], window_eta, window_phi)
    return split
