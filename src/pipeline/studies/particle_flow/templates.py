"""The single-pion templates of ATLAS's parametrised particle flow (``parametrised``; ATLAS,
EPJC 77 (2017) 466, Sec. 4): per (momentum bin, layer of first interaction) the expected
E/p, its spread and the ring energy-density profiles, measured on single charged pions
(``template_statistics`` per chunk, summed, then ``templates_from_statistics``; bins with
too few events borrow a neighbour's statistics), and their JSON file (``Templates``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io.outputs import write_text
from pipeline.studies.particle_flow.cell_matching import (
    CellGeometry,
    cell_rings,
    check_inputs,
    cluster_cells,
    cluster_table,
    first_interaction_layer,
    match_clusters,
    with_track,
)

#: Momentum bin edges [GeV]; momenta below the first edge fall in the first bin, above the
#: last in the last (the study's pions are 2-20 GeV).
P_BINS = (2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)
#: The fewest calibration events a template bin needs to use its own statistics.
MIN_BIN_ENTRIES = 20
#: Cone around the track whose clusters make E_dep of the templates (ATLAS).
TEMPLATE_CONE = 0.4
#: ``Templates.source`` codes: where a bin's statistics come from.
SOURCES = ("own", "neighbour_p_bin", "p_bin_all_lfi", "inclusive")
# The name templates.json files carry since version 1, when the class lived in parametrised.
_FORMAT = "pipeline.particle_flow.parametrised.Templates"
_VERSION = 1


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
    n = check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
    edges = _check_p_bins(p_bins)
    n_p, n_layers = edges.size - 1, geometry.n_layers
    p = np.asarray(track_p, np.float64)
    track_eta = np.asarray(track_eta, np.float64)
    track_phi = np.asarray(track_phi, np.float64)
    cells = cluster_cells(energy, labels, track_eta, track_phi, geometry)
    table = cluster_table(cells, p, n, geometry)
    match = match_clusters(table, n)
    lfi = first_interaction_layer(match.layer_energy, geometry.depth_lambda)
    used = with_track(p) & (match.matched >= 0)
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
    key = bin_id[cells.event[sel]] * n_rings + cell_rings(cells, sel, geometry)
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
