"""ATLAS topological clustering ("4-2-0" topo-clusters) of calorimeter images, vectorised over cells and events.

Why: the particle-flow study (Di Bello et al., EPJC 81 (2021) 107) compares learned reconstruction with the classical
one, whose first step groups calorimeter cells into topo-clusters. This is that step, after Aad et al., "Topological
cell clustering in the ATLAS calorimeters and its performance in LHC Run 1", EPJC 77 (2017) 490:

* significance zeta = E / sigma per cell (sigma: the noise of the cell's layer);
* seeds: |zeta| > ``seed`` (4);
* growth: a cluster grows from its seeds through neighbouring cells with |zeta| > ``neighbour`` (2), which grow in
  turn; clusters that touch through growing cells are merged (the proto-cluster merging of ATLAS), so a cluster is a
  connected component of growing cells that holds at least one seed;
* perimeter: every neighbour of a cluster's growing cell with |zeta| > ``perimeter`` (0) joins the cluster but does
  not grow. A perimeter cell next to several clusters goes to the cluster of its neighbouring growing cell with the
  largest significance (|zeta|, or zeta for the positive-only option); on equal significance, to that of the
  neighbour with the smallest cell index (layer by layer, row-major within a layer). This mimics ATLAS, where
  growing cells are processed in order of decreasing significance and a perimeter cell stays with the first cluster
  that reaches it.

``use_absolute=True`` (the default, as ATLAS Run 2) applies the three thresholds to |zeta|, which treats positive
and negative noise alike (negative-energy seeds form clusters too, with negative energy); ``use_absolute=False``
applies them to zeta itself (positive-only: negative cells never seed nor grow, and with the default perimeter
threshold 0 never join a perimeter either). All thresholds are strict. Cells with exactly zero energy are treated as absent (no readout would report them): they never seed, grow or
join a perimeter, whatever the thresholds; with the default perimeter threshold 0 this is what the strict inequality
gives anyway.

Neighbours: within a layer, the 8 cells sharing an edge or a corner; between adjacent layers l and l + 1 (only), the
cells whose (eta, phi) areas overlap with positive area, computed exactly from the integer index intervals (any
granularity ratio, e.g. (64, 32) next to (64, 64) or (3, 1) next to (2, 1)).

Conventions: an event is a list of layers (3 EM then 3 HAD in the study, any number here), layer l an array (h_l,
w_l) (axis 0 eta, axis 1 phi), all covering the same (eta, phi) window; cell (i, j) of layer l covers eta in
[i, i + 1) * size / h_l and phi in [j, j + 1) * size / w_l. A batch is a list of arrays (B, h_l, w_l), energies in
GeV; the noise is one sigma per layer in GeV. The output labels cells per event: 0, 1, ... in decreasing cluster
energy (sum of E over its cells, perimeter included), -1 for unclustered cells.

Differences from ATLAS: no splitting of clusters at local maxima (merged proto-clusters are the final clusters); the
window is a patch, so phi does not wrap around; layers are connected only to their immediate neighbours in depth;
sigma is a given constant per layer rather than the electronic and pile-up noise of each cell.

Implementation: the static neighbour lists of a layer-shape set are computed once (cached, CSR form) in per-event
cell indices and offset per event; only the lists of growing cells are expanded, so the cost follows the activity.
The growing cells of the whole batch form one sparse graph, whose connected components
(``scipy.sparse.csgraph.connected_components``) are the candidate clusters; perimeter ties are resolved with one
lexicographic sort. No Python loop runs over cells or events (only over layers, to build the static lists).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components


def _overlaps(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, k) of overlapping intervals [i, i+1)/n1 and [k, k+1)/n2 of the unit interval.

    Exact in integers: the intervals overlap with positive length iff i*n2 < (k+1)*n1 and k*n1 < (i+1)*n2.
    """
    i = np.arange(n1)[:, None]
    k = np.arange(n2)[None, :]
    return np.nonzero((i * n2 < (k + 1) * n1) & (k * n1 < (i + 1) * n2))


def _neighbour_pairs(shapes: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Undirected neighbour pairs (a, b) of one event's cells, each pair once, as flat cell indices (P,) each.

    Cells are numbered layer by layer, row-major within a layer.
    """
    offsets = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])])
    first, second = [], []
    for layer, (h, w) in enumerate(shapes):
        idx = np.arange(h * w).reshape(h, w) + offsets[layer]
        # Right, down, down-right and down-left: the 8-neighbourhood, each pair once, no wrap-around.
        for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :]),
                     (idx[:-1, :-1], idx[1:, 1:]), (idx[:-1, 1:], idx[1:, :-1])):
            first.append(a.ravel())
            second.append(b.ravel())
    for layer in range(len(shapes) - 1):
        (h1, w1), (h2, w2) = shapes[layer], shapes[layer + 1]
        eta1, eta2 = _overlaps(h1, h2)
        phi1, phi2 = _overlaps(w1, w2)
        # A cell pair overlaps in area iff it overlaps in eta and in phi: the product of the two interval pairings.
        first.append((offsets[layer] + eta1[:, None] * w1 + phi1[None, :]).ravel())
        second.append((offsets[layer + 1] + eta2[:, None] * w2 + phi2[None, :]).ravel())
    return np.concatenate(first).astype(np.int64), np.concatenate(second).astype(np.int64)


@lru_cache(maxsize=32)
def _adjacency(shapes: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric neighbour lists of one event's cells in CSR form: (indptr (N + 1,), indices (2 P,)).

    Cached per layer-shape set, hence read-only.
    """
    a, b = _neighbour_pairs(shapes)
    n_cells = sum(h * w for h, w in shapes)
    graph = csr_matrix((np.ones(2 * len(a), dtype=np.int8), (np.concatenate([a, b]), np.concatenate([b, a]))),
                       shape=(n_cells, n_cells))
    indptr, indices = graph.indptr.astype(np.int64), graph.indices.astype(np.int64)
    for array in (indptr, indices):
        array.setflags(write=False)
    return indptr, indices


def _neighbours(cells: np.ndarray, n_cells: int, adjacency: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
    """Every (cell, neighbour) pair of the given global cells (event * N + cell), both as global indices (M,).

    Working from a list of active cells (not all pairs of all events) keeps the cost proportional to them.
    """
    indptr, indices = adjacency
    local = cells % n_cells
    start, degree = indptr[local], indptr[local + 1] - indptr[local]
    owner = np.repeat(np.arange(len(cells)), degree)
    # Position of each entry within its cell's neighbour list.
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(degree) - degree, degree)
    return cells[owner], (cells - local)[owner] + indices[start[owner] + rank]


def topo_clusters(energy: Sequence[np.ndarray], noise: Sequence[float], seed: float = 4.0, neighbour: float = 2.0,
                  perimeter: float = 0.0, use_absolute: bool = True) -> list[np.ndarray]:
    """Topo-cluster labels of every cell of a batch of calorimeter images (see the module docstring).

    energy: one array (B, h_l, w_l) per layer [GeV]; noise: one sigma > 0 per layer [GeV]; seed, neighbour,
    perimeter: significance thresholds with seed >= neighbour >= perimeter; use_absolute: thresholds on |E/sigma|
    (default) or on E/sigma (positive-only).

    Returns one int32 array (B, h_l, w_l) per layer: the cell's cluster index within its event, clusters numbered
    0, 1, ... by decreasing energy (ties: by smallest cell index in the cluster), -1 for unclustered cells.
    """
    if len(energy) == 0 or len(energy) != len(noise):
        raise ValueError(f"need one noise sigma per layer and at least one layer, got {len(energy)} layers "
                         f"and {len(noise)} sigmas")
    if not seed >= neighbour >= perimeter:
        raise ValueError(f"thresholds must satisfy seed >= neighbour >= perimeter, got {seed}, {neighbour}, "
                         f"{perimeter}")
    layers = [np.asarray(layer) for layer in energy]
    if any(layer.ndim != 3 or layer.shape[0] != layers[0].shape[0] for layer in layers):
        raise ValueError(f"layers must be (B, h_l, w_l) with a common B, got {[layer.shape for layer in layers]}")
    sigmas = np.asarray(noise, dtype=float)
    if sigmas.shape != (len(layers),) or not np.all(sigmas > 0):
        raise ValueError(f"noise must be one positive sigma per layer, got {noise}")

    shapes = tuple((int(layer.shape[1]), int(layer.shape[2])) for layer in layers)
    sizes = [h * w for h, w in shapes]
    n_events, n_cells = layers[0].shape[0], sum(sizes)
    e = np.concatenate([layer.reshape(n_events, size) for layer, size in zip(layers, sizes)], axis=1)  # (B, N) [GeV]
    e = e.astype(float, copy=False)
    zeta = e / np.repeat(sigmas, sizes)  # (B, N)
    # From here on every per-cell array is flat over the batch, (B N,), indexed by the global cell event * N + cell.
    e, significance = e.ravel(), (np.abs(zeta) if use_absolute else zeta).ravel()
    present = e != 0
    is_seed = present & (significance > seed)
    grows = present & (significance > neighbour)

    # The graph of growing cells of the whole batch, nodes numbered by their rank among growing cells; neighbour
    # pairs never cross events, so its components never do either.
    adjacency = _adjacency(shapes)
    grow_cells = np.flatnonzero(grows)  # (G,) global cell index event * N + cell
    node = np.cumsum(grows) - 1  # global cell -> node (valid where it grows)
    cell, other = _neighbours(grow_cells, n_cells, adjacency)
    edge = grows[other]
    graph = coo_matrix((np.ones(np.count_nonzero(edge), dtype=np.int8), (node[cell[edge]], node[other[edge]])),
                       shape=(len(grow_cells), len(grow_cells)))
    n_components, component = connected_components(graph, directed=False)

    # Keep the components holding a seed: their growing cells are the clusters' cores.
    seeded = np.zeros(n_components, dtype=bool)
    seeded[component[is_seed[grow_cells]]] = True
    label = np.full(n_events * n_cells, -1, dtype=np.int64)  # global cell -> component (-1: none)
    core_nodes = seeded[component]
    label[grow_cells[core_nodes]] = component[core_nodes]
    core = label >= 0

    # Perimeter: each candidate next to a core cell takes the label of its most significant core neighbour (ties:
    # smallest cell index).
    candidate = present & ~core & (significance > perimeter)
    near, far = _neighbours(grow_cells[core_nodes], n_cells, adjacency)
    near, far = near[candidate[far]], far[candidate[far]]
    order = np.lexsort((near, -significance[near], far))
    winner = order[np.flatnonzero(np.diff(far[order], prepend=-1))]  # the first entry of each target
    label[far[winner]] = label[near[winner]]

    # Renumber clusters within each event by decreasing energy. Each cluster lies in one event; its smallest global
    # cell index (first occurrence, cells being sorted) gives its event and breaks energy ties.
    clustered = np.flatnonzero(label >= 0)
    compact = np.full(n_components, -1, dtype=np.int64)
    compact[seeded] = np.arange(np.count_nonzero(seeded))
    cluster = compact[label[clustered]]
    n_clusters = np.count_nonzero(seeded)
    cluster_energy = np.bincount(cluster, weights=e[clustered], minlength=n_clusters)
    _, first = np.unique(cluster, return_index=True)
    first_cell = clustered[first]
    cluster_event = first_cell // n_cells
    by_rank = np.lexsort((first_cell, -cluster_energy, cluster_event))
    events_sorted = cluster_event[by_rank]
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[by_rank] = np.arange(n_clusters) - np.searchsorted(events_sorted, events_sorted, side="left")
    out = np.full(n_events * n_cells, -1, dtype=np.int32)
    out[clustered] = rank[cluster]

    parts = np.split(out.reshape(n_events, n_cells), np.cumsum(sizes)[:-1], axis=1)
    return [part.reshape(n_events, h, w) for part, (h, w) in zip(parts, shapes)]
