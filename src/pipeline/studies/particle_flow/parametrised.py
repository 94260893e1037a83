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
  eta = -window[0] / 2 + (i + 0.5) window[0] / h_l, phi likewise with w_l (``cell_matching.CellGeometry``).
* The track: ``track_p`` (N,) [GeV], its measured momentum, NaN (or not > 0) for an event
  without a track (the convention of ``formats.PARTICLE_FLOW_IMAGES``, whose ``track_p`` is
  NaN without one); ``track_eta``, ``track_phi`` (N, 6): its extrapolation to every layer,
  window-relative.

The algorithm, per event (``subtract``)
---------------------------------------
1. Track-cluster matching (``cell_matching.match_track``). Per topo-cluster: its energy E_c (the sum of
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
   from the templates (``templates.fit_templates``).
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

The templates (``templates.fit_templates``), from single charged pions (the ``pflow_charged``
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

from dataclasses import dataclass

import numpy as np

from pipeline.studies.particle_flow.cell_matching import (
    CellGeometry,
    ClusterCells,
    cell_rings,
    check_inputs,
    cluster_cells,
    cluster_table,
    first_interaction_layer,
    match_clusters,
    with_track,
)
from pipeline.studies.particle_flow.templates import Templates

#: The remnant is removed when below this many sigma(E_dep) (ATLAS).
REMNANT_SIGMAS = 1.5
#: ``SubtractionInfo.branch`` codes: index into this tuple.
BRANCHES = ("no_track", "no_match", "whole_cluster", "rings", "rings_remnant")
_NO_TRACK, _NO_MATCH, _WHOLE, _RINGS, _RINGS_REMNANT = range(len(BRANCHES))


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
    n = check_inputs(energy, labels, track_p, track_eta, track_phi, geometry)
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
    cells = cluster_cells(energy, labels, track_eta, track_phi, geometry)
    match = match_clusters(cluster_table(cells, p, n, geometry), n)
    has_track = with_track(p)
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


def _ring_fractions(templates: Templates, cells: ClusterCells, ring_cells: np.ndarray, events: np.ndarray,
                    p_bin: np.ndarray, lfi: np.ndarray, e_exp: np.ndarray, geometry: CellGeometry) -> np.ndarray:
    """The fraction of its energy removed from each cell of ``ring_cells`` (the matched
    clusters' cells of the events in the "rings" branch, ``events`` (N,) bool): the rings of
    an event ranked by expected density, whole rings until E_exp, the last one scaled."""
    offsets = geometry.ring_offsets
    n_rings = int(offsets[-1])
    sel = np.flatnonzero(events)
    row = np.full(events.size, -1)
    row[sel] = np.arange(sel.size)
    ev, ring = cells.event[ring_cells], cell_rings(cells, ring_cells, geometry)
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
