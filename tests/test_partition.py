"""Partitions of ragged sets: all pairs, connected components, per-set labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.partition import all_pairs, connected_components, local_labels


def expected_pairs(offsets) -> list[tuple[int, int]]:
    """All i < j pairs within each set, set by set, row-major (itertools.combinations order)."""
    pairs = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        pairs.extend(itertools.combinations(range(start, stop), 2))
    return pairs


def as_pairs(i, j) -> list[tuple[int, int]]:
    return list(zip(i.tolist(), j.tolist()))


def test_all_pairs_hand_made():
    offsets = np.array([0, 3, 3, 4, 8])
    i, j = all_pairs(offsets)
    assert i.dtype == np.int64 and j.dtype == np.int64
    assert as_pairs(i, j) == [(0, 1), (0, 2), (1, 2),
                              (4, 5), (4, 6), (4, 7), (5, 6), (5, 7), (6, 7)]
    assert as_pairs(i, j) == expected_pairs(offsets)


@pytest.mark.parametrize("offsets", [[0], [0, 0], [0, 1], [0, 1, 2, 3], [0, 0, 1, 1]])
def test_all_pairs_without_pairs(offsets):
    i, j = all_pairs(np.array(offsets))
    assert len(i) == 0 and len(j) == 0


def test_all_pairs_random_sizes(rng):
    for _ in range(20):
        sizes = rng.integers(0, 41, rng.integers(1, 60))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        i, j = all_pairs(offsets)
        assert as_pairs(i, j) == expected_pairs(offsets)


def test_all_pairs_every_size_up_to_40():
    sizes = np.arange(41)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    i, j = all_pairs(offsets)
    assert as_pairs(i, j) == expected_pairs(offsets)


@pytest.mark.parametrize("n", [1000, 2049])
def test_all_pairs_large_set_has_no_rounding_errors(n):
    # The row index comes from a square root: check row boundaries where rounding bites.
    i, j = all_pairs(np.array([0, 5, 5 + n]))
    ei, ej = np.triu_indices(n, k=1)
    np.testing.assert_array_equal(i[10:], ei + 5)
    np.testing.assert_array_equal(j[10:], ej + 5)
    assert len(i) == 10 + n * (n - 1) // 2


def test_connected_components_hand_made():
    # 0-3, 3-5, 1-2, 6 alone, 4-7, 7-8 (given in both directions and duplicated).
    edge_i = np.array([3, 5, 2, 7, 8, 0, 3])
    edge_j = np.array([0, 3, 1, 4, 7, 3, 0])
    labels = connected_components(9, edge_i, edge_j)
    np.testing.assert_array_equal(labels, [0, 1, 1, 0, 4, 0, 6, 4, 4])


def test_connected_components_without_edges():
    empty = np.zeros(0, np.int64)
    np.testing.assert_array_equal(connected_components(4, empty, empty), [0, 1, 2, 3])
    assert len(connected_components(0, empty, empty)) == 0


def test_connected_components_random_against_union_find(rng):
    n = 200
    edge_i = rng.integers(0, n, 150)
    edge_j = rng.integers(0, n, 150)
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for a, b in zip(edge_i.tolist(), edge_j.tolist()):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)  # keep the smallest index as root
    expected = [find(a) for a in range(n)]
    np.testing.assert_array_equal(connected_components(n, edge_i, edge_j), expected)


def test_local_labels_hand_made():
    # Sets: [0..3], [4], [5..9]; components as connected_components gives them.
    offsets = np.array([0, 4, 5, 10])
    components = np.array([0, 1, 0, 1, 4, 5, 6, 5, 8, 6])
    labels, component_offsets = local_labels(components, offsets)
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 0, 0, 1, 0, 2, 1])
    np.testing.assert_array_equal(component_offsets, [0, 2, 3, 6])


def test_local_labels_with_empty_sets():
    offsets = np.array([0, 0, 3, 3, 5])
    components = np.array([0, 0, 2, 3, 3])
    labels, component_offsets = local_labels(components, offsets)
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(component_offsets, [0, 0, 2, 2, 3])


def test_local_labels_random(rng):
    sizes = rng.integers(0, 12, 40)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    # Random links within sets only, then the components.
    i, j = all_pairs(offsets)
    keep = rng.random(len(i)) < 0.15
    components = connected_components(int(offsets[-1]), i[keep], j[keep])
    labels, component_offsets = local_labels(components, offsets)
    for s, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
        comp = components[start:stop].tolist()
        first_seen = list(dict.fromkeys(comp))  # order of first appearance
        np.testing.assert_array_equal(labels[start:stop], [first_seen.index(c) for c in comp])
        assert component_offsets[s + 1] - component_offsets[s] == len(first_seen)
    assert component_offsets[0] == 0
