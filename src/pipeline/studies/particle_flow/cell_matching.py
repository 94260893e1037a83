"""Track-cluster matching of ATLAS's parametrised particle flow (step 1 of the algorithm in
``parametrised``; ATLAS, EPJC 77 (2017) 466, Sec. 4): the cells and rings the baseline sees
(``CellGeometry``), every event's topo-cluster cells as flat arrays (``cluster_cells``),
per-cluster tables (energy, barycentre and width relative to the track, ``cluster_table``),
the match of the track to its closest eligible cluster (``match_track``) and the layer of
first interaction. Units and input shapes as in ``parametrised``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: ATLAS's ring widths in Delta R: EM1, EM2, EM3, HAD1, HAD2, HAD3.
ATLAS_RING_WIDTHS = (0.049, 0.018, 0.028, 0.070, 0.070, 0.111)
#: Eligible clusters for the match have E_c > this fraction of p (ATLAS).
MIN_CLUSTER_FRACTION = 0.1
#: Largest track-cluster distance Delta R' for a match, in units of the cluster width (ATLAS).
MAX_MATCH_DISTANCE = 1.64


@dataclass(frozen=True)
class CellGeometry:
    """The layers seen by the baseline: cells, window, depths and ring widths.

    layer_shapes: (n_eta, n_phi) per layer; window: (size_eta, size_phi) of the window all
    layers cover [rad]; depth_lambda: every layer's depth [interaction lengths], for the
    layer of first interaction; ring_widths: the rings' width in Delta R per layer.
    Sequences are stored as tuples of Python numbers, so two geometries compare equal by value.
    No defaults: the study's geometry is the config's (``from_window_geometry``).
    """

    layer_shapes: tuple[tuple[int, int], ...]
    window: tuple[float, float]
    depth_lambda: tuple[float, ...]
    ring_widths: tuple[float, ...]

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        set_(self, "layer_shapes", tuple((int(h), int(w)) for h, w in self.layer_shapes))
        set_(self, "window", (float(self.window[0]), float(self.window[1])))
        set_(self, "depth_lambda", tuple(float(d) for d in self.depth_lambda))
        set_(self, "ring_widths", tuple(float(w) for w in self.ring_widths))
        n = len(self.layer_shapes)
        if len(self.depth_lambda) != n or len(self.ring_widths) != n or n == 0:
            raise ValueError(f"CellGeometry: expected as many depths and ring widths as layers (at least "
                             f"one); got {n} shapes, {len(self.depth_lambda)} depths, "
                             f"{len(self.ring_widths)} widths")
        if min(self.depth_lambda) <= 0 or min(self.ring_widths) <= 0 or min(self.window) <= 0:
            raise ValueError("CellGeometry: depths, ring widths and window sizes must be > 0")

    @classmethod
    def from_window_geometry(cls, geometry, ring_widths: Sequence[float]) -> "CellGeometry":
        """The baseline's view of the study's ``WindowGeometry`` (``pipeline.simulation.window_geometry``:
        its shapes, window and depths in lambda), with ``ring_widths`` (ATLAS_RING_WIDTHS for ATLAS's)."""
        return cls(layer_shapes=tuple(geometry.shapes), window=tuple(geometry.window),
                   depth_lambda=tuple(geometry.depth_lambda()), ring_widths=tuple(ring_widths))

    @property
    def n_layers(self) -> int:
        return len(self.layer_shapes)

    def pitch(self, layer: int) -> tuple[float, float]:
        """(d_eta, d_phi): a cell's size in the layer."""
        h, w = self.layer_shapes[layer]
        return self.window[0] / h, self.window[1] / w

    def cell_centres(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(eta (h,), phi (w,)): window-relative cell centres of a layer."""
        h, w = self.layer_shapes[layer]
        return ((np.arange(h) + 0.5) * self.window[0] / h - self.window[0] / 2,
                (np.arange(w) + 0.5) * self.window[1] / w - self.window[1] / 2)

    def cell_area(self, layer: int) -> float:
        d_eta, d_phi = self.pitch(layer)
        return d_eta * d_phi

    def n_rings(self, layer: int) -> int:
        """Rings of a layer: enough to reach across the window's diagonal (any cell from a
        track inside the window); cells further away go to the last ring."""
        return math.ceil(math.hypot(*self.window) / self.ring_widths[layer])

    @property
    def ring_offsets(self) -> np.ndarray:
        """(n_layers + 1,): where each layer's rings start in the rings of all layers, one after the other."""
        return np.concatenate([[0], np.cumsum([self.n_rings(l) for l in range(self.n_layers)])]).astype(np.int64)

    def ring_index(self, layer: int, d_eta: np.ndarray, d_phi: np.ndarray) -> np.ndarray:
        """Ring k = floor(Delta R / width) of cells at (d_eta, d_phi) from the track, capped at the last ring."""
        k = np.floor(np.hypot(d_eta, d_phi) / self.ring_widths[layer])
        return np.minimum(k, self.n_rings(layer) - 1).astype(np.int64)

    def to_dict(self) -> dict:
        return {"layer_shapes": [list(s) for s in self.layer_shapes], "window": list(self.window),
                "depth_lambda": list(self.depth_lambda), "ring_widths": list(self.ring_widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "CellGeometry":
        return cls(layer_shapes=tuple(tuple(s) for s in d["layer_shapes"]), window=tuple(d["window"]),
                   depth_lambda=tuple(d["depth_lambda"]), ring_widths=tuple(d["ring_widths"]))


@dataclass(frozen=True)
class TrackMatch:
    """The track-cluster match of every event (``match_track``), arrays (N,) unless noted.

    matched: the matched cluster's label, -1 for none; distance: its Delta R' (NaN for none);
    cluster_energy: its energy E_c [GeV] (NaN for none); layer_energy (N, n_layers): its
    energy per layer [GeV] (0 for none).
    """

    matched: np.ndarray
    distance: np.ndarray
    cluster_energy: np.ndarray
    layer_energy: np.ndarray


def first_interaction_layer(layer_energy: np.ndarray, depth_lambda: Sequence[float]) -> np.ndarray:
    """The layer of first interaction of every event: argmax over layers l of
    rho_l - rho_{l-1}, rho_l = max(E_l, 0) / depth_l the energy density [GeV / lambda], and
    rho_{-1} = 0 (nothing deposits in front of the calorimeter), so the first layer's
    increase is its density itself. A layer's negative energy is noise, hence no deposit.

    layer_energy (N, n_layers) [GeV]: the matched cluster's energy per layer;
    depth_lambda (n_layers,). Returns (N,) int, the first of equal maxima, -1 where no
    layer has positive energy.
    """
    e = np.asarray(layer_energy, np.float64)
    rho = np.maximum(e, 0.0) / np.asarray(depth_lambda, np.float64)
    increase = np.diff(rho, axis=1, prepend=0.0)
    return np.where((e > 0).any(axis=1), np.argmax(increase, axis=1), -1)


@dataclass(frozen=True)
class ClusterCells:
    """The topo-cluster cells of all events as flat (M,) arrays, layer after layer (layer l's
    cells are ``slice(starts[l], starts[l + 1])``): event, layer, index into the layer's
    raveled (N, h_l, w_l) array, energy [GeV, float64], label, and the cell centre's offset
    from the track extrapolated to the cell's layer (d_eta, d_phi)."""

    starts: np.ndarray
    event: np.ndarray
    layer: np.ndarray
    flat: np.ndarray
    energy: np.ndarray
    label: np.ndarray
    d_eta: np.ndarray
    d_phi: np.ndarray


def check_inputs(energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry) -> int:
    """The number of events; ValueError naming the first input whose shape does not fit."""
    n = len(np.asarray(track_p))
    if len(energy) != geometry.n_layers or len(labels) != geometry.n_layers:
        raise ValueError(f"expected {geometry.n_layers} layers of energy and labels; got {len(energy)}, {len(labels)}")
    for l, shape in enumerate(geometry.layer_shapes):
        for name, a in (("energy", energy[l]), ("labels", labels[l])):
            if np.shape(a) != (n, *shape):
                raise ValueError(f"{name}[{l}]: shape {np.shape(a)}, expected {(n, *shape)}")
    for name, a in (("track_eta", track_eta), ("track_phi", track_phi)):
        if np.shape(a) != (n, geometry.n_layers):
            raise ValueError(f"{name}: shape {np.shape(a)}, expected {(n, geometry.n_layers)}")
    return n


def cluster_cells(energy, labels, track_eta, track_phi, geometry: CellGeometry) -> ClusterCells:
    """Every event's topo-cluster cells (label >= 0) as flat arrays, layer after layer, with
    their offsets from the track extrapolated to their layer (``ClusterCells``)."""
    track_eta = np.asarray(track_eta, np.float64)
    track_phi = np.asarray(track_phi, np.float64)
    parts = []
    for l, (h, w) in enumerate(geometry.layer_shapes):
        # Flat indices: 1-D gathers and scatters are much faster than 3-index fancy indexing.
        lab = np.asarray(labels[l]).reshape(-1)
        flat = np.flatnonzero(lab >= 0)
        ev, cell = np.divmod(flat, h * w)
        i, j = np.divmod(cell, w)
        eta_c, phi_c = geometry.cell_centres(l)
        parts.append((ev, np.full(ev.size, l, np.int8), flat,
                      np.asarray(energy[l]).reshape(-1)[flat].astype(np.float64), lab[flat].astype(np.int64),
                      eta_c[i] - track_eta[ev, l], phi_c[j] - track_phi[ev, l]))
    starts = np.concatenate([[0], np.cumsum([part[0].size for part in parts])])
    return ClusterCells(starts, *(np.concatenate(column) for column in zip(*parts)))


def cell_rings(cells: ClusterCells, which: np.ndarray, geometry: CellGeometry) -> np.ndarray:
    """The ring around the track in its layer of every cell in ``which`` ((M,) bool), numbered
    across layers (``ring_offsets``); only those cells, whose track positions are finite."""
    offsets = geometry.ring_offsets
    rings = []
    for l in range(geometry.n_layers):
        at = slice(cells.starts[l], cells.starts[l + 1])
        chosen = which[at]
        rings.append(offsets[l] + geometry.ring_index(l, cells.d_eta[at][chosen], cells.d_phi[at][chosen]))
    return np.concatenate(rings)


def cluster_table(cells: ClusterCells, track_p: np.ndarray, n_events: int, geometry: CellGeometry) -> dict:
    """Per (event, cluster) tables (N, K) (K = largest label + 1): energy, per-layer energy
    (N, K, n_layers), offset from the track (d_eta, d_phi), Delta R' and eligibility."""
    n_layers = geometry.n_layers
    k = int(cells.label.max()) + 1 if cells.label.size else 0
    size = n_events * k
    key = cells.event * k + cells.label
    layer_key = key * n_layers + cells.layer
    layer_energy = np.bincount(layer_key, weights=cells.energy, minlength=size * n_layers).reshape(size, n_layers)
    weight = np.maximum(cells.energy, 0.0)
    layer_weight = np.bincount(layer_key, weights=weight, minlength=size * n_layers).reshape(size, n_layers)
    sum_w = layer_weight.sum(axis=1)
    safe_w = np.where(sum_w > 0, sum_w, 1.0)

    def mean(x):
        return np.bincount(key, weights=weight * x, minlength=size) / safe_w

    pitch_var = np.array([geometry.pitch(l) for l in range(n_layers)]) ** 2 / 12  # a cell's own spread
    d_eta, d_phi = mean(cells.d_eta), mean(cells.d_phi)
    var_eta = np.maximum(mean(cells.d_eta**2) - d_eta**2, 0.0) + layer_weight @ pitch_var[:, 0] / safe_w
    var_phi = np.maximum(mean(cells.d_phi**2) - d_phi**2, 0.0) + layer_weight @ pitch_var[:, 1] / safe_w
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.hypot(d_eta / np.sqrt(var_eta), d_phi / np.sqrt(var_phi)).reshape(n_events, k)
    layer_energy = layer_energy.reshape(n_events, k, n_layers)
    e_cluster = layer_energy.sum(axis=2)
    with np.errstate(invalid="ignore"):  # NaN momentum: no track, nothing eligible
        eligible = ((e_cluster > MIN_CLUSTER_FRACTION * np.asarray(track_p, np.float64)[:, None])
                    & (sum_w.reshape(n_events, k) > 0) & (distance < MAX_MATCH_DISTANCE))
    return {"energy": e_cluster, "layer_energy": layer_energy, "d_eta": d_eta.reshape(n_events, k),
            "d_phi": d_phi.reshape(n_events, k), "distance": distance, "eligible": eligible}


def match_clusters(table: dict, n_events: int) -> TrackMatch:
    """Each event's eligible cluster of the smallest Delta R' in ``cluster_table``'s tables, or none."""
    n_layers = table["layer_energy"].shape[2]
    if table["energy"].shape[1] == 0:
        return TrackMatch(np.full(n_events, -1), np.full(n_events, np.nan), np.full(n_events, np.nan),
                          np.zeros((n_events, n_layers)))
    distance = np.where(table["eligible"], table["distance"], np.inf)
    best = np.argmin(distance, axis=1)
    rows = np.arange(n_events)
    ok = np.isfinite(distance[rows, best])
    return TrackMatch(matched=np.where(ok, best, -1), distance=np.where(ok, distance[rows, best], np.nan),
                      cluster_energy=np.where(ok, table["energy"][rows, best], np.nan),
                      layer_energy=np.where(ok[:, None], table["layer_energy"][rows, best], 0.0))


def match_track(energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry) -> TrackMatch:
    """Match every event's track to its closest eligible topo-cluster (step 1 of the module
    docstring of ``parametrised``). Shapes and units as in ``parametrised.subtract``."""
    n = check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
    cells = cluster_cells(energy, labels, track_eta, track_phi, geometry)
    return match_clusters(cluster_table(cells, track_p, n, geometry), n)


def with_track(track_p: np.ndarray) -> np.ndarray:
    """(N,) bool: the events with a track (a finite, positive momentum; NaN means none)."""
    p = np.asarray(track_p, np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(p) & (p > 0)
