"""The parametrised (energy-flow) particle flow of ATLAS: the non-learned baseline of the
computer-vision particle flow (Di Bello et al., EPJC 81 (2021) 107).

After ATLAS, "Jet reconstruction and performance using particle flow with the ATLAS
detector", EPJC 77 (2017) 466, arXiv:1703.10485, Sec. 4 (eflowRec). The charged pion's
expected calorimeter deposit, measured on single pions, is subtracted cell by cell from
the topo-cluster its track points to; what is left is the estimate of the neutral energy.

Inputs and units
----------------
* ``energy``: list of the six layers (EM1, EM2, EM3, HAD1, HAD2, HAD3), layer l an array
  (N, h_l, w_l) [GeV] (axis 0 eta, axis 1 phi), noisy (can be negative), zero outside
  topo-clusters; ``labels``: the same shapes, int, -1 outside topo-clusters, else the
  cluster's index in its event (clusters span layers).
* All layers cover one (eta, phi) window of size ``window`` centred on the track's impact;
  positions are window-relative: cell (i, j) of layer l is centred at
  eta = -window[0] / 2 + (i + 0.5) window[0] / h_l, phi likewise with w_l (``CellGeometry``).
* The track: ``track_p`` (N,) [GeV], its measured momentum, NaN (or not > 0) for an event
  without a track (the convention of ``formats.PARTICLE_FLOW_IMAGES``, whose ``track_p`` is
  NaN without one); ``track_eta``, ``track_phi`` (N, 6): its extrapolation to every layer,
  window-relative.

The algorithm, per event (``subtract``)
---------------------------------------
1. Track-cluster matching (``match_track``). Per topo-cluster: its energy E_c (the sum of
   its cells, all layers), and the track-cluster offsets d_eta, d_phi: the mean over the
   cluster's cells of (cell centre - the track extrapolated to the cell's layer), weighted
   by max(E_cell, 0) (noise cells of negative energy carry no position). So the cluster's
   barycentre is compared with the track in the layers where the cluster's energy is, in
   the same proportions. The widths sigma_eta, sigma_phi are the same weighted RMS of
   those offsets (the cluster seen along the track, so the track's bending from layer to
   layer does not widen it) plus the cells' own size (pitch^2 / 12 per cell, as if the
   energy were uniform over the cell), so a one-cell cluster still has a finite width.
   Distance Delta R' = sqrt((d_eta / sigma_eta)^2 + (d_phi / sigma_phi)^2) (ATLAS).
   Eligible: E_c > 0.1 p and Delta R' < 1.64 (ATLAS's cut); the match is the eligible
   cluster with the smallest Delta R'. No eligible cluster: the event is left untouched
   ("no_match").
2. Layer of first interaction (``first_interaction_layer``), from the matched cluster's
   energy per layer: the layer with the largest increase of the energy density (energy
   per interaction length of the layer's depth) over the layer in front of it.
3. Expected deposit E_exp = p <E/p>(p bin, LFI) and its spread sigma = p sigma(E/p)(p bin, LFI),
   from the templates (``fit_templates``).
4. E_c < E_exp: the whole cluster is removed ("whole_cluster").
5. Else the rings: in every layer the cells of the matched cluster are grouped in rings,
   annuli of the layer's width in Delta R around the track extrapolated to that layer (ring
   k: k w_l <= Delta R < (k + 1) w_l; ATLAS widths EM1 0.049, EM2 0.018, EM3 0.028, HAD1-2
   0.070, HAD3 0.111). The rings of all layers are ranked by the template's expected energy
   density (p bin, LFI, layer, ring), highest first (ties: layer, then ring, in order), and
   removed whole, one after the other, until the removed energy reaches E_exp; the ring at
   which it does is scaled cell by cell by the fraction needed. Then the remnant: the
   cluster keeps E_c - E_exp; if that is below 1.5 sigma, it is removed too
   ("rings_remnant": the whole cluster removed after all), else the event ends as "rings".
6. What is left in every cell is the neutral estimate (``remaining``).

The templates (``fit_templates``), from single charged pions (the ``pflow_charged``
sample, where all calorimeter energy is the pion's), per bin of (p, LFI) with the same
matching and LFI: the mean and the standard deviation of E_dep / p, E_dep the energy of
the topo-clusters within Delta R < 0.4 of the track (ATLAS; a cluster's distance: the
hypotenuse of its offsets d_eta, d_phi of step 1) together with the matched cluster; and
per layer and ring the energy density sum(E_ring / p) / sum(ring area) over the bin's
events, E_ring the energy of those clusters' cells in the ring, the area that of all the
window's cells in the ring [fraction of p per unit eta x phi]. Bins with fewer than
``min_entries`` events take, in that order, the nearest p bin of the same LFI that has
enough (the lower one on a tie), the p bin's events of all LFIs, the inclusive sample
("source"; every statistic of a bin, mean, sigma and profile, comes from the same events).

What differs from ATLAS, and why
--------------------------------
* No eta dependence of the templates: the study's window is at one fixed eta.
* One track per event, so no ordering of tracks, no subtraction of several tracks from one
  cluster and no matching of several clusters to one track.
* No split-shower recovery (ATLAS adds the clusters within Delta R < 0.2 when
  (E_c - E_exp) / sigma < -1): the whole-cluster branch removes only the matched cluster,
  whatever the pion deposited in other clusters stays in the neutral estimate.
* Cluster positions and widths are taken relative to the track in each cell's layer, and
  the template cone around the track is in those offsets (ATLAS: the cluster's own
  barycentre, the track at EM2); in the small window the two differ by the track's bending
  across the layers, which the offsets remove.
* No calorimeter-region dependence of the ring widths beyond the per-layer values, and the
  positions are the cell centres in the window's flat (eta, phi) frame (no phi wrap: the
  window is small).

Cost: NumPy over chunks of events, over the topo-cluster cells only (sparse: the few
hundred clustered cells of an event, not its ~7700 cells) and over (event, ring) tables for
the ring ordering, no loop over events (its rate: docs/benchmarks.md). Memory per chunk: (events) x (largest label + 1)
x n_layers floats for the cluster tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io.outputs import write_text

#: ATLAS's ring widths in Delta R: EM1, EM2, EM3, HAD1, HAD2, HAD3.
ATLAS_RING_WIDTHS = (0.049, 0.018, 0.028, 0.070, 0.070, 0.111)
#: Momentum bin edges [GeV]; momenta below the first edge fall in the first bin, above the
#: last in the last (the study's pions are 2-20 GeV).
P_BINS = (2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)
#: The fewest calibration events a template bin needs to use its own statistics.
MIN_BIN_ENTRIES = 20
#: Eligible clusters for the match have E_c > this fraction of p (ATLAS).
MIN_CLUSTER_FRACTION = 0.1
#: Largest track-cluster distance Delta R' for a match, in units of the cluster width (ATLAS).
MAX_MATCH_DISTANCE = 1.64
#: The remnant is removed when below this many sigma(E_dep) (ATLAS).
REMNANT_SIGMAS = 1.5
#: Cone around the track whose clusters make E_dep of the templates (ATLAS).
TEMPLATE_CONE = 0.4
#: ``SubtractionInfo.branch`` codes: index into this tuple.
BRANCHES = ("no_track", "no_match", "whole_cluster", "rings", "rings_remnant")
#: ``Templates.source`` codes: where a bin's statistics come from.
SOURCES = ("own", "neighbour_p_bin", "p_bin_all_lfi", "inclusive")

_NO_TRACK, _NO_MATCH, _WHOLE, _RINGS, _RINGS_REMNANT = range(len(BRANCHES))
_FORMAT = "pipeline.particle_flow.parametrised.Templates"
_VERSION = 1


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


def _p_bin(edges: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges[1:-1], np.asarray(p, np.float64), side="right")


@dataclass(frozen=True, eq=False)
class Templates:
    """The single-pion parametrisation the subtraction uses, per (p bin, LFI).

    geometry: the ``CellGeometry`` the profiles were measured with (rings, depths);
    p_edges (n_p + 1,) [GeV]: bin edges, the first and last bins open-ended;
    mean, sigma (n_p, n_layers): <E_dep / p> and its standard deviation per (p bin, LFI);
    counts (n_p, n_layers) int: calibration events in the bin itself;
    source (n_p, n_layers) int: index into ``SOURCES``, where the bin's statistics come from;
    profile: per layer l an array (n_p, n_layers, n_rings_l), the expected energy density of
    ring k of layer l around the track [fraction of p per unit eta x phi];
    inclusive_mean, inclusive_sigma: <E_dep / p> and its spread over all calibration events.
    """

    geometry: CellGeometry
    p_edges: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    counts: np.ndarray
    source: np.ndarray
    profile: tuple[np.ndarray, ...]
    inclusive_mean: float
    inclusive_sigma: float

    def p_bin(self, p: np.ndarray) -> np.ndarray:
        """(N,) bin index of momenta [GeV], out-of-range momenta in the first or last bin."""
        return _p_bin(self.p_edges, p)

    def flat_profile(self) -> np.ndarray:
        """(n_p, n_layers, n_rings of all layers): the profiles of all layers side by side
        (``geometry.ring_offsets``)."""
        return np.concatenate(self.profile, axis=-1)

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": _VERSION, "geometry": self.geometry.to_dict(),
                "p_edges": self.p_edges.tolist(), "mean": self.mean.tolist(), "sigma": self.sigma.tolist(),
                "counts": self.counts.tolist(), "source": self.source.tolist(),
                "sources": list(SOURCES), "profile": [p.tolist() for p in self.profile],
                "inclusive_mean": self.inclusive_mean, "inclusive_sigma": self.inclusive_sigma}

    @classmethod
    def from_dict(cls, d: dict) -> "Templates":
        if d.get("format") != _FORMAT or d.get("version") != _VERSION:
            raise ValueError(f"not {_FORMAT} version {_VERSION}: format {d.get('format')!r}, "
                             f"version {d.get('version')!r}")
        return cls(geometry=CellGeometry.from_dict(d["geometry"]), p_edges=np.asarray(d["p_edges"], np.float64),
                   mean=np.asarray(d["mean"], np.float64), sigma=np.asarray(d["sigma"], np.float64),
                   counts=np.asarray(d["counts"], np.int64), source=np.asarray(d["source"], np.int64),
                   profile=tuple(np.asarray(p, np.float64) for p in d["profile"]),
                   inclusive_mean=float(d["inclusive_mean"]), inclusive_sigma=float(d["inclusive_sigma"]))

    def to_json(self) -> str:
        # json writes floats with repr: the round trip is exact.
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Templates":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (``pipeline.io.outputs.write_text``); returns the path."""
        return write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Templates":
        return cls.from_json(Path(path).read_text())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Templates):
            return NotImplemented
        arrays = ("p_edges", "mean", "sigma", "counts", "source")
        return (self.geometry == other.geometry and self.inclusive_mean == other.inclusive_mean
                and self.inclusive_sigma == other.inclusive_sigma
                and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
                and len(self.profile) == len(other.profile)
                and all(np.array_equal(a, b) for a, b in zip(self.profile, other.profile)))

    __hash__ = None  # mutable arrays inside


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


@dataclass(frozen=True)
class SubtractionInfo:
    """What ``subtract`` did per event, arrays (N,).

    branch: index into ``BRANCHES`` (no_track, no_match, whole_cluster, rings, rings_remnant);
    matched_cluster: the matched cluster's label (-1 for none); match_distance: its Delta R'
    (NaN for none); first_interaction_layer: the LFI (-1 for none); p_bin: the template's p
    bin (-1 without a track); e_cluster: the matched cluster's energy before the subtraction
    [GeV]; e_expected, sigma_expected: E_exp = p <E/p> and p sigma(E/p) [GeV] (NaN for none);
    e_removed: the energy taken out of the cells [GeV] (0 when nothing was).
    """

    branch: np.ndarray
    matched_cluster: np.ndarray
    match_distance: np.ndarray
    first_interaction_layer: np.ndarray
    p_bin: np.ndarray
    e_cluster: np.ndarray
    e_expected: np.ndarray
    sigma_expected: np.ndarray
    e_removed: np.ndarray

    def branch_names(self) -> np.ndarray:
        """(N,) the branch of every event by name."""
        return np.asarray(BRANCHES)[self.branch]


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
class _Cells:
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


def _check_inputs(energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry) -> int:
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


def _cluster_cells(energy, labels, track_eta, track_phi, geometry: CellGeometry) -> _Cells:
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
    return _Cells(starts, *(np.concatenate(column) for column in zip(*parts)))


def _cell_rings(cells: _Cells, which: np.ndarray, geometry: CellGeometry) -> np.ndarray:
    """The ring around the track in its layer of every cell in ``which`` ((M,) bool), numbered
    across layers (``ring_offsets``); only those cells, whose track positions are finite."""
    offsets = geometry.ring_offsets
    rings = []
    for l in range(geometry.n_layers):
        at = slice(cells.starts[l], cells.starts[l + 1])
        chosen = which[at]
        rings.append(offsets[l] + geometry.ring_index(l, cells.d_eta[at][chosen], cells.d_phi[at][chosen]))
    return np.concatenate(rings)


def _cluster_table(cells: _Cells, track_p: np.ndarray, n_events: int, geometry: CellGeometry) -> dict:
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


def _match(table: dict, n_events: int) -> TrackMatch:
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
    docstring). Shapes and units as in ``subtract``."""
    n = _check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
    cells = _cluster_cells(energy, labels, track_eta, track_phi, geometry)
    return _match(_cluster_table(cells, track_p, n, geometry), n)


def _has_track(track_p: np.ndarray) -> np.ndarray:
    p = np.asarray(track_p, np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(p) & (p > 0)


def fit_templates(energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry,
                  p_bins: Sequence[float], min_entries: int, chunk_events: int = 4096) -> Templates:
    """The templates from single charged pions (module docstring, "The templates").

    energy, labels: lists of the layers' (N, h_l, w_l) arrays [GeV], labels -1 outside
    clusters; track_p (N,) [GeV] (NaN: no track, the event is not used); track_eta,
    track_phi (N, n_layers), window-relative. p_bins: the bin edges [GeV] (at least 2;
    the outer bins are open-ended); min_entries: the fewest events a bin must have to use
    its own statistics (>= 2); chunk_events: events per step of the ring-area count, which
    goes over every cell of the window (memory ~ chunk_events x cells x 8 bytes).
    Events without a match are not used. ValueError when fewer than 2 events are usable.
    A sample too large for memory: sum ``template_statistics`` over its chunks and call
    ``templates_from_statistics``, which is what this does for one chunk.
    """
    stats = template_statistics(energy, labels, track_p, track_eta, track_phi, geometry, p_bins, chunk_events)
    return templates_from_statistics(stats, geometry, p_bins, min_entries)


def template_statistics(energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry,
                        p_bins: Sequence[float], chunk_events: int = 4096) -> list[np.ndarray]:
    """The sums the templates are made of, for a chunk of calibration events (arguments as
    ``fit_templates``): per (p bin, LFI) the events, sum r, sum r^2 (r = E_dep / p), and
    per ring the energy / p and the area. The sums of two chunks are those of both."""
    n = _check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
    edges = _check_p_bins(p_bins)
    n_p, n_layers = edges.size - 1, geometry.n_layers
    p = np.asarray(track_p, np.float64)
    track_eta = np.asarray(track_eta, np.float64)
    track_phi = np.asarray(track_phi, np.float64)
    cells = _cluster_cells(energy, labels, track_eta, track_phi, geometry)
    table = _cluster_table(cells, p, n, geometry)
    match = _match(table, n)
    lfi = first_interaction_layer(match.layer_energy, geometry.depth_lambda)
    used = _has_track(p) & (match.matched >= 0)
    bin_id = np.where(used, _p_bin(edges, np.where(used, p, 0.0)) * n_layers + lfi, -1)

    # E_dep: the clusters within the cone around the track at EM2, and the matched one.
    k = table["energy"].shape[1]
    in_dep = np.hypot(table["d_eta"], table["d_phi"]) < TEMPLATE_CONE
    in_dep |= np.arange(k)[None, :] == match.matched[:, None]
    safe_p = np.where(used, p, 1.0)
    ratio = np.where(used, (table["energy"] * in_dep).sum(axis=1) / safe_p, 0.0)

    # Sufficient statistics per bin: count, sum r, sum r^2, ring energies / p and ring areas.
    n_bins, offsets = n_p * n_layers, geometry.ring_offsets
    n_rings = int(offsets[-1])
    sel = used[cells.event] & in_dep[cells.event, cells.label]
    key = bin_id[cells.event[sel]] * n_rings + _cell_rings(cells, sel, geometry)
    ring_energy = np.bincount(key, weights=(cells.energy / safe_p[cells.event])[sel], minlength=n_bins * n_rings)
    ring_area = np.zeros(n_bins * n_rings)
    events = np.flatnonzero(used)
    for start in range(0, events.size, chunk_events):
        chunk = events[start:start + chunk_events]
        for l in range(n_layers):
            eta_c, phi_c = geometry.cell_centres(l)
            d_eta = eta_c[None, :, None] - track_eta[chunk, l, None, None]
            d_phi = phi_c[None, None, :] - track_phi[chunk, l, None, None]
            area_key = bin_id[chunk, None, None] * n_rings + offsets[l] + geometry.ring_index(l, d_eta, d_phi)
            ring_area += np.bincount(area_key.ravel(), minlength=n_bins * n_rings) * geometry.cell_area(l)
    stats = [np.bincount(bin_id[used], minlength=n_bins).astype(np.float64),
             np.bincount(bin_id[used], weights=ratio[used], minlength=n_bins),
             np.bincount(bin_id[used], weights=ratio[used] ** 2, minlength=n_bins),
             ring_energy.reshape(n_bins, n_rings), ring_area.reshape(n_bins, n_rings)]
    return [s.reshape(n_p, n_layers, *s.shape[1:]) for s in stats]


def _check_p_bins(p_bins: Sequence[float]) -> np.ndarray:
    edges = np.asarray(p_bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"p_bins: expected at least 2 increasing edges; got {p_bins}")
    return edges


def templates_from_statistics(stats: list[np.ndarray], geometry: CellGeometry,
                              p_bins: Sequence[float], min_entries: int) -> Templates:
    """The Templates of summed ``template_statistics`` (the empty bins resolved as the
    module docstring says). ValueError when fewer than 2 events were usable."""
    edges = _check_p_bins(p_bins)
    if min_entries < 2:
        raise ValueError(f"min_entries: expected >= 2 (a spread needs two events); got {min_entries}")
    n_used = int(stats[0].sum())
    if n_used < 2:
        raise ValueError(f"fit_templates: {n_used} events have a track matched to a cluster; expected at least 2")
    offsets = geometry.ring_offsets
    counts = stats[0].astype(np.int64)
    resolved, source = _resolve_bins(stats, counts, min_entries)
    count, sum_r, sum_r2, e_ring, a_ring = resolved
    mean = sum_r / count
    sigma = np.sqrt(np.maximum(sum_r2 - count * mean**2, 0.0) / (count - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        density = np.where(a_ring > 0, e_ring / a_ring, 0.0)
    inclusive = [s.sum(axis=(0, 1)) for s in stats[:3]]
    inclusive_mean = inclusive[1] / inclusive[0]
    inclusive_sigma = math.sqrt(max(inclusive[2] - inclusive[0] * inclusive_mean**2, 0.0) / (inclusive[0] - 1))
    return Templates(geometry=geometry, p_edges=edges, mean=mean, sigma=sigma, counts=counts, source=source,
                     profile=tuple(density[..., offsets[l]:offsets[l + 1]] for l in range(geometry.n_layers)),
                     inclusive_mean=float(inclusive_mean), inclusive_sigma=float(inclusive_sigma))


def _resolve_bins(stats: list[np.ndarray], counts: np.ndarray, min_entries: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per (p bin, LFI) the sufficient statistics to use (arrays (n_p, n_lfi, ...)) and their
    source (``SOURCES``): the bin's own; the nearest p bin of the same LFI with enough
    events (the lower on a tie); the p bin's events of all LFIs; all events."""
    n_p, n_lfi = counts.shape
    out = [s.copy() for s in stats]
    source = np.zeros((n_p, n_lfi), np.int64)
    pooled_p = [s.sum(axis=1) for s in stats]
    inclusive = [s.sum(axis=(0, 1)) for s in stats]
    for b in range(n_p):
        for lfi in range(n_lfi):
            if counts[b, lfi] >= min_entries:
                continue
            full = np.flatnonzero(counts[:, lfi] >= min_entries)
            if full.size:
                nearest = full[np.argmin(np.abs(full - b))]  # argmin: the first, the lower bin, on a tie
                chosen, source[b, lfi] = [s[nearest, lfi] for s in stats], 1
            elif pooled_p[0][b] >= min_entries:
                chosen, source[b, lfi] = [s[b] for s in pooled_p], 2
            else:
                chosen, source[b, lfi] = inclusive, 3
            for o, c in zip(out, chosen):
                o[b, lfi] = c
    return out, source


def subtract(templates: Templates, energy, labels, track_p, track_eta, track_phi, geometry: CellGeometry | None = None,
             chunk_events: int = 2048) -> tuple[list[np.ndarray], SubtractionInfo]:
    """Subtract every event's expected charged-pion deposit (module docstring, steps 1-6).

    energy, labels: lists of n_layers arrays (N, h_l, w_l), energies [GeV], labels -1
    outside topo-clusters; track_p (N,) [GeV], NaN (or not > 0) without a track;
    track_eta, track_phi (N, n_layers): the track extrapolated to every layer,
    window-relative. geometry: None for the templates' own; any other must equal it (the
    profiles belong to its rings), else ValueError. chunk_events: events processed at a
    time (the result does not depend on it; chunks keep the per-cell work arrays small,
    which is faster than one pass over a large sample).

    Returns ``remaining``, a list of n_layers arrays (N, h_l, w_l) [GeV], the energy left
    in every cell (the neutral estimate; a copy, the inputs are not modified; dtype of
    the input), and a ``SubtractionInfo``. Cells outside the matched cluster are never
    changed.
    """
    if geometry is None:
        geometry = templates.geometry
    elif geometry != templates.geometry:
        raise ValueError(f"geometry {geometry} differs from the templates' {templates.geometry}")
    n = _check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
    p = np.asarray(track_p, np.float64)
    track_eta = np.asarray(track_eta, np.float64)
    track_phi = np.asarray(track_phi, np.float64)
    remaining = [np.array(e, copy=True, order="C") for e in energy]  # C order: its chunks' raveled views are writable
    parts = []
    for start in range(0, max(n, 1), chunk_events):  # one (empty) chunk for N = 0
        at = slice(start, start + chunk_events)
        parts.append(_subtract_chunk(templates, [e[at] for e in energy], [lab[at] for lab in labels], p[at],
                                     track_eta[at], track_phi[at], geometry, [r[at] for r in remaining]))
    info = SubtractionInfo(**{name: np.concatenate([part[name] for part in parts])
                              for name in SubtractionInfo.__dataclass_fields__})
    return remaining, info


def _subtract_chunk(templates: Templates, energy, labels, p, track_eta, track_phi, geometry: CellGeometry,
                    remaining: list[np.ndarray]) -> dict:
    """``subtract`` on a slice of events: writes the matched clusters' new energies into
    ``remaining`` (C-contiguous views) and returns the ``SubtractionInfo`` fields."""
    n = p.size
    cells = _cluster_cells(energy, labels, track_eta, track_phi, geometry)
    match = _match(_cluster_table(cells, p, n, geometry), n)
    has_track = _has_track(p)
    matched = has_track & (match.matched >= 0)
    lfi = np.where(matched, first_interaction_layer(match.layer_energy, geometry.depth_lambda), -1)
    p_bin = np.where(has_track, templates.p_bin(np.where(has_track, p, 0.0)), -1)
    b, f = np.maximum(p_bin, 0), np.maximum(lfi, 0)
    e_exp = np.where(matched, p * templates.mean[b, f], np.nan)
    sigma = np.where(matched, p * templates.sigma[b, f], np.nan)
    e_cluster = match.cluster_energy
    branch = np.full(n, _NO_MATCH, np.int64)
    branch[~has_track] = _NO_TRACK
    with np.errstate(invalid="ignore"):
        branch[matched & (e_cluster < e_exp)] = _WHOLE
        rings = matched & (e_cluster >= e_exp)
        # After the rings the cluster keeps exactly E_c - E_exp: the remnant test needs no cells.
        branch[rings & (e_cluster - e_exp < REMNANT_SIGMAS * sigma)] = _RINGS_REMNANT
        branch[rings & (e_cluster - e_exp >= REMNANT_SIGMAS * sigma)] = _RINGS

    in_cluster = matched[cells.event] & (cells.label == match.matched[cells.event])
    cell_branch = branch[cells.event]
    fraction = np.where(in_cluster & ((cell_branch == _WHOLE) | (cell_branch == _RINGS_REMNANT)), 1.0, 0.0)
    ring_cells = in_cluster & (cell_branch == _RINGS)
    fraction[ring_cells] = _ring_fractions(templates, cells, ring_cells, branch == _RINGS, p_bin, lfi, e_exp,
                                           geometry)
    new_energy = cells.energy * (1.0 - fraction)
    e_removed = np.bincount(cells.event, weights=cells.energy - new_energy, minlength=n)
    for l in range(geometry.n_layers):
        at = slice(cells.starts[l], cells.starts[l + 1])
        remaining[l].reshape(-1)[cells.flat[at]] = new_energy[at]
    return {"branch": branch, "matched_cluster": np.where(matched, match.matched, -1),
            "match_distance": np.where(matched, match.distance, np.nan), "first_interaction_layer": lfi,
            "p_bin": p_bin, "e_cluster": np.where(matched, e_cluster, np.nan), "e_expected": e_exp,
            "sigma_expected": sigma, "e_removed": e_removed}


def _ring_fractions(templates: Templates, cells: _Cells, ring_cells: np.ndarray, events: np.ndarray,
                    p_bin: np.ndarray, lfi: np.ndarray, e_exp: np.ndarray, geometry: CellGeometry) -> np.ndarray:
    """The fraction of its energy removed from each cell of ``ring_cells`` (the matched
    clusters' cells of the events in the "rings" branch, ``events`` (N,) bool): the rings of
    an event ranked by expected density, whole rings until E_exp, the last one scaled."""
    offsets = geometry.ring_offsets
    n_rings = int(offsets[-1])
    sel = np.flatnonzero(events)
    row = np.full(events.size, -1)
    row[sel] = np.arange(sel.size)
    ev, ring = cells.event[ring_cells], _cell_rings(cells, ring_cells, geometry)
    key = row[ev] * n_rings + ring
    ring_energy = np.bincount(key, weights=cells.energy[ring_cells], minlength=sel.size * n_rings)
    ring_energy = ring_energy.reshape(sel.size, n_rings)
    density = templates.flat_profile()[p_bin[sel], lfi[sel]]  # (n_sel, n_rings)
    # Stable sort of -density: equal densities keep the layer, then ring, order.
    order = np.argsort(-density, axis=1, kind="stable")
    e_sorted = np.take_along_axis(ring_energy, order, axis=1)
    # Per-event cumulative sums (rows), so an event's sums carry no other event's rounding.
    cum = np.cumsum(e_sorted, axis=1)
    before = np.zeros_like(cum)  # the energy removed before each ring
    before[:, 1:] = cum[:, :-1]
    target = e_exp[sel, None]
    crossed = cum >= target
    # E_c >= E_exp, so the last ring reaches E_exp but for rounding: then all rings go.
    last = np.where(crossed.any(axis=1), np.argmax(crossed, axis=1), n_rings)[:, None]
    rank = np.arange(n_rings)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        partial = np.clip(np.where(e_sorted > 0, (target - before) / e_sorted, 1.0), 0.0, 1.0)
    frac_sorted = np.where(rank < last, 1.0, np.where(rank == last, partial, 0.0))
    frac = np.empty_like(frac_sorted)
    np.put_along_axis(frac, order, frac_sorted, axis=1)
    return frac[row[ev], ring]
