"""Partitions of ragged sets (a jet's tracks) from pairwise links, vectorised over all sets.

Used for the truth vertex labels (tracks whose production points are close) and, by the
vertex finders, to turn predicted "same vertex" edges into a valid partition.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csgraph


def all_pairs(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs (i < j) of elements within each set, as global indices.

    offsets: (n_sets + 1,) int. Returns two (n_pairs,) int64 arrays, set by set.
    """
    sizes = np.diff(offsets).astype(np.int64)
    n_pairs = sizes * (sizes - 1) // 2
    total = int(n_pairs.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    set_of_pair = np.repeat(np.arange(len(sizes)), n_pairs)
    k = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    n = sizes[set_of_pair]
    # Invert k = i*n - i*(i+1)/2 + (j - i - 1) for the row i (the upper triangle, row-major).
    i = (n - 0.5 - np.sqrt((n - 0.5) ** 2 - 2.0 * k)).astype(np.int64)
    # Guard against floating point rounding at row boundaries.
    row_start = i * n - i * (i + 1) // 2
    too_far = row_start > k
    i[too_far] -= 1
    row_next = (i + 1) * n - (i + 1) * (i + 2) // 2
    too_near = row_next <= k
    i[too_near] += 1
    row_start = i * n - i * (i + 1) // 2
    j = k - row_start + i + 1
    base = offsets[:-1][set_of_pair]
    return base + i, base + j


def connected_components(n_nodes: int, edge_i: np.ndarray, edge_j: np.ndarray) -> np.ndarray:
    """Label of each node's connected component: the smallest node index in it."""
    graph = coo_matrix(
        (np.ones(len(edge_i), np.int8), (edge_i, edge_j)), shape=(n_nodes, n_nodes)
    )
    _, component = csgraph.connected_components(graph, directed=False)
    smallest = np.full(component.max(initial=-1) + 1, n_nodes, np.int64)
    np.minimum.at(smallest, component, np.arange(n_nodes))
    return smallest[component]


def local_labels(components: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-set component indices 0, 1, ... in order of first appearance.

    components: (n,) component label of each element (the smallest element index in its
    component, as connected_components returns, so components never cross sets).
    Returns (labels within the set, (n_sets + 1,) offsets of the components per set).
    """
    n = len(components)
    is_root = components == np.arange(n)
    component_id = np.cumsum(is_root) - 1  # global id of each root, in element order
    global_label = component_id[components]
    roots_before = np.concatenate([[0], np.cumsum(is_root)])
    first = roots_before[offsets[:-1]]
    set_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    component_offsets = roots_before[offsets]
    return global_label - first[set_of], component_offsets


def partition_dense(adjacency: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Vertex labels from a padded batch of predicted "same vertex" matrices.

    adjacency: (n_sets, N, N) bool, symmetric (only the upper triangle is read);
    mask: (n_sets, N) bool, True for real elements (padding last). Returns (n_sets, N)
    int64 labels 0, 1, ... in order of first appearance within each set (a valid
    partition by construction: connected components), -1 on padding.
    """
    n_sets, width = mask.shape
    n = mask.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    upper = np.triu(adjacency & mask[:, :, None] & mask[:, None, :], k=1)
    s, i, j = np.nonzero(upper)
    components = connected_components(int(offsets[-1]), offsets[s] + i, offsets[s] + j)
    local, _ = local_labels(components, offsets)
    labels = np.full((n_sets, width), -1, np.int64)
    labels[mask] = local  # padding is last, so mask order equals the flat order
    return labels
