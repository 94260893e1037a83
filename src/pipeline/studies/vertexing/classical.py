"""Non-learned vertex finders on the smeared perigee parameters, vectorised over jets.

* ``baseline`` (ours; the paper's exact baseline is unknown): tracks compatible with the
  primary vertex (|d0/sigma(d0)| < 3 and |z0/sigma(z0)| < 3, z0 relative to the jet's
  median z0) form vertex 0; all other tracks form one secondary vertex.
* ``avr``: adaptive vertex reconstruction in the spirit of RAVE's AVR: fit a vertex to
  the remaining tracks with annealed adaptive weights, give it the tracks whose weight
  ends above 0.5, remove them and repeat while two or more tracks remain; tracks that no
  vertex takes are singletons. Tracks are straight lines near the beam line (a good
  approximation over the millimetres that matter), so each fit is a weighted linear
  least-squares problem in the vertex position, solved for all jets at once.

Inputs are padded arrays (jets, N) of raw (not standardised) d0, z0, phi, cot(theta),
sigma(d0), sigma(z0) in mm and rad, and the mask of real tracks.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from pipeline.partition import partition_dense
from pipeline.studies.vertexing.formats import TRACK_FEATURES

#: Annealing temperatures of the adaptive fit (chi2 units) and the chi2 cut-off.
TEMPERATURES = (256.0, 64.0, 16.0, 4.0, 1.0, 1.0)
CHI2_CUT = 9.0


def baseline_partition(tracks: Mapping[str, np.ndarray], mask: np.ndarray, cut: float = 3.0) -> np.ndarray:
    """Vertex labels (jets, N) of the baseline: primary-compatible tracks vs. the rest."""
    prompt = (np.abs(tracks["d0"] / tracks["sigma_d0"]) < cut) & (np.abs(tracks["z0"] / tracks["sigma_z0"]) < cut)
    # Label in order of first appearance: the leading track's group is vertex 0.
    first_prompt = prompt[:, :1]
    labels = np.where(prompt == first_prompt, 0, 1)
    return np.where(mask, labels, -1)


def _design(tracks: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the linearised track model: d0(v) = d0 - a_d.v, z0(v) = z0 - a_z.v."""
    sin, cos, cot = np.sin(tracks["phi"]), np.cos(tracks["phi"]), tracks["cot_theta"]
    zero = np.zeros_like(sin)
    a_d = np.stack([-sin, cos, zero], axis=-1)
    a_z = np.stack([-cos * cot, -sin * cot, np.ones_like(sin)], axis=-1)
    return a_d, a_z, np.stack([tracks["d0"], tracks["z0"]], axis=-1)


def chi2_to_vertex(tracks, vertex: np.ndarray) -> np.ndarray:
    """chi2 (jets, N) of each track w.r.t. a vertex position (jets, 3) [mm]."""
    a_d, a_z, target = _design(tracks)
    r_d = target[..., 0] - np.einsum("jnk,jk->jn", a_d, vertex)
    r_z = target[..., 1] - np.einsum("jnk,jk->jn", a_z, vertex)
    return (r_d / tracks["sigma_d0"]) ** 2 + (r_z / tracks["sigma_z0"]) ** 2


def fit_vertex(tracks, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares vertex position (jets, 3) [mm] for track weights (jets, N)."""
    a_d, a_z, target = _design(tracks)
    w_d = weights / tracks["sigma_d0"] ** 2
    w_z = weights / tracks["sigma_z0"] ** 2
    normal = np.einsum("jn,jna,jnb->jab", w_d, a_d, a_d) + np.einsum("jn,jna,jnb->jab", w_z, a_z, a_z)
    rhs = np.einsum("jn,jna,jn->ja", w_d, a_d, target[..., 0]) + np.einsum("jn,jna,jn->ja", w_z, a_z, target[..., 1])
    normal += 1e-9 * np.eye(3)  # keeps jets without usable tracks solvable
    return np.linalg.solve(normal, rhs[..., None])[..., 0]


def adaptive_fit(tracks, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Annealed adaptive vertex fit of the active tracks: (vertex (jets, 3), final weights)."""
    weights = active.astype(np.float64)
    vertex = fit_vertex(tracks, weights)
    for temperature in TEMPERATURES:
        chi2 = chi2_to_vertex(tracks, vertex)
        # Probability that the track belongs to the vertex rather than being an outlier.
        weights = 1.0 / (1.0 + np.exp(np.clip((chi2 - CHI2_CUT) / (2 * temperature), -50, 50)))
        weights *= active
        vertex = fit_vertex(tracks, weights)
    return vertex, weights


def avr_partition(tracks: Mapping[str, np.ndarray], mask: np.ndarray, min_weight: float = 0.5) -> np.ndarray:
    """Vertex labels (jets, N) from iterated adaptive vertex fits; singletons for the rest."""
    n_jets, width = mask.shape
    labels = np.full((n_jets, width), -1, np.int64)
    remaining = mask.copy()
    next_label = np.zeros(n_jets, np.int64)
    for _ in range(width):
        fitting = remaining.sum(1) >= 2
        if not fitting.any():
            break
        _, weights = adaptive_fit(tracks, remaining & fitting[:, None])
        taken = (weights > min_weight) & remaining & fitting[:, None]
        found = taken.sum(1) >= 2
        taken &= found[:, None]
        labels[taken] = np.repeat(next_label, width).reshape(n_jets, width)[taken]
        next_label += found
        remaining &= ~taken
        # Jets whose fit found no vertex of two tracks are finished.
        remaining &= found[:, None]
    # Leftover tracks: one vertex each.
    leftover = (labels < 0) & mask
    rank = np.cumsum(leftover, axis=1) - 1
    labels[leftover] = (next_label[:, None] + rank)[leftover]
    # Relabel in order of first appearance: the partition step's components of "same label".
    return partition_dense(labels[:, :, None] == labels[:, None, :], mask)


#: The non-learned vertex finders, by name, and their settings (for the record).
CLASSICAL = {"avr": avr_partition, "baseline": baseline_partition}
SETTINGS = {
    "avr": {"temperatures": list(TEMPERATURES), "chi2_cut": CHI2_CUT, "min_weight": 0.5},
    "baseline": {"significance_cut": 3.0},
}


def raw_tracks(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """The perigee parameters (mm, rad) and errors the classical finders need, un-standardised
    from padded track_graphs features x (B, N, F) with the file's feature mean and std (F,)."""
    raw = x * std + mean
    column = {name: raw[..., k] for k, name in enumerate(TRACK_FEATURES)}
    return {
        "d0": column["d0"], "z0": column["z0"], "phi": column["phi"], "cot_theta": column["cot_theta"],
        "sigma_d0": np.exp(column["log_sigma_d0"]), "sigma_z0": np.exp(column["log_sigma_z0"]),
    }


def classical_partition(finder: str, x: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Vertex labels (B, N), -1 on padding, of a classical finder (``avr``, ``baseline``) for
    padded standardised track features x (B, N, F) and mask (B, N)."""
    if finder not in CLASSICAL:
        raise ValueError(f"unknown classical vertex finder {finder!r}; expected one of {sorted(CLASSICAL)}")
    return CLASSICAL[finder](raw_tracks(x, mean, std), mask)
