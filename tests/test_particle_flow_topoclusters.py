"""Topological clustering (pipeline.studies.particle_flow.topoclusters) on hand-made grids with unit noise.

With sigma = 1 the energies are the significances, so the grids below read as 4-2-0 patterns directly.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import numpy as np
import pytest
from scipy.stats import norm

from pipeline.studies.particle_flow.topoclusters import topo_clusters

SHAPES = [(4, 4), (4, 2), (2, 2)]
STUDY_SHAPES = [(64, 32), (64, 64), (32, 32), (16, 16), (16, 16), (8, 8)]


def one_event(layers, **options):
    """Labels of a single event given as a list of 2-D arrays (unit noise), as a list of 2-D arrays."""
    labels = topo_clusters([np.asarray(layer, dtype=float)[None] for layer in layers], [1.0] * len(layers), **options)
    return [layer[0] for layer in labels]


def cells(label_layer, value):
    """The set of (i, j) of a 2-D label array equal to value."""
    return {tuple(int(x) for x in index) for index in np.argwhere(label_layer == value)}


def test_seed_ring_and_perimeter_give_the_expected_cells():
    grid = np.ones((7, 7))
    grid[2:5, 2:5] = 3.0
    grid[3, 3] = 5.0
    grid[1, 1] = 0.0  # zero energy: not a cell the readout reports, never in a cluster
    grid[1, 2] = -1.0  # negative perimeter cell: |zeta| > 0 by default, excluded when positive-only
    (labels,) = one_event([grid])
    expected = {(i, j) for i in range(1, 6) for j in range(1, 6)} - {(1, 1)}
    assert cells(labels, 0) == expected
    assert cells(labels, -1) == {(i, j) for i in range(7) for j in range(7)} - expected
    (positive,) = one_event([grid], use_absolute=False)
    assert cells(positive, 0) == expected - {(1, 2)}
    # A negative perimeter threshold takes the negative cell back, never the zero-energy one.
    (positive,) = one_event([grid], use_absolute=False, perimeter=-2.0)
    assert cells(positive, 0) == expected


def test_thresholds_are_strict():
    grid = np.ones((5, 5))
    grid[2, 2] = 4.0  # not a seed
    assert (one_event([grid])[0] == -1).all()
    grid[2, 2] = 4.5
    grid[2, 3] = 2.0  # not growing: its own neighbours (column 4) stay out
    (labels,) = one_event([grid])
    assert cells(labels, 0) == {(i, j) for i in range(1, 4) for j in range(1, 4)}


def test_no_wrap_around():
    grid = np.ones((4, 4))
    grid[0, 0] = 5.0
    (labels,) = one_event([grid])
    assert cells(labels, 0) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_seeds_joined_by_a_growing_bridge_merge():
    grid = np.full((3, 9), 0.5)
    grid[1, 2:7] = 3.0
    grid[1, 1] = grid[1, 7] = 5.0
    (labels,) = one_event([grid])
    assert (labels == 0).all()  # one cluster, every cell being a neighbour of the growing row


@pytest.mark.parametrize("left, right, winner", [(3.0, 2.5, "left"), (2.5, 3.0, "right"), (3.0, 3.0, "left")])
def test_seeds_split_by_a_perimeter_cell_stay_apart_and_the_shared_cell_follows_the_tie_rule(left, right, winner):
    grid = np.full((3, 9), 0.5)
    grid[1, 1:8] = [5.0, 3.0, left, 1.0, right, 3.0, 5.0]
    (labels,) = one_event([grid])
    assert labels[1, 1] != labels[1, 7] and min(labels[1, 1], labels[1, 7]) >= 0
    assert labels.max() == 1
    # Column 4 touches the growing cells (., 3) and (., 5) only: it goes to the side whose growing neighbour is
    # the most significant, to the smaller cell index (left) on a tie.
    side = labels[1, 1] if winner == "left" else labels[1, 7]
    assert (labels[:, 4] == side).all()
    assert (labels[:, :4] == labels[1, 1]).all() and (labels[:, 5:] == labels[1, 7]).all()


def test_growing_cell_without_seed_is_unclustered():
    layers = [np.ones(shape) for shape in SHAPES]
    layers[0][1, 2] = 3.0
    layers[2][1, 1] = 3.9
    assert all((labels == -1).all() for labels in one_event(layers))


def test_growth_across_layers_follows_the_overlaps_of_adjacent_layers_only():
    shapes = [(4, 4), (4, 2), (2, 2), (2, 2)]
    layers = [np.ones(shape) for shape in shapes]
    layers[1][1, 0] = 5.0  # eta [1/4, 2/4), phi [0, 1/2)
    labels = one_event(layers)
    assert cells(labels[0], 0) == {(1, 0), (1, 1)}  # finer in phi: two cells overlap
    assert cells(labels[1], 0) == {(i, j) for i in range(3) for j in range(2)}
    assert cells(labels[2], 0) == {(0, 0)}  # coarser in eta
    assert (labels[3] == -1).all()  # same area as layer 2's (0, 0), but not adjacent to layer 1

    layers[2][0, 0] = 3.0  # now layer 2 grows, and reaches layer 3 through its own overlap
    labels = one_event(layers)
    assert cells(labels[3], 0) == {(0, 0)}
    assert cells(labels[2], 0) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert cells(labels[1], 0) == {(i, j) for i in range(3) for j in range(2)}  # layer 1 cells over (0, 0): same


@pytest.mark.parametrize("transpose", [False, True])
def test_overlaps_of_non_dividing_granularities(transpose):
    # Thirds against halves: [0, 1/3) meets [0, 1/2) only, [1/3, 2/3) meets both, [2/3, 1) the second only.
    shapes = [(3, 1), (2, 1)]
    prepare = (lambda a: a.T) if transpose else (lambda a: a)
    for row, expected in ((0, {0}), (1, {0, 1}), (2, {1})):
        layers = [np.ones(shape) for shape in shapes]
        layers[0][row, 0] = 5.0
        labels = one_event([prepare(layer) for layer in layers])
        assert {max(index) for index in cells(prepare(labels[1]), 0)} == expected


def test_negative_cells_seed_with_the_absolute_significance_only():
    grid = np.full((5, 5), 0.5)
    grid[1:4, 1:4] = -3.0
    grid[2, 2] = -5.0
    (labels,) = one_event([grid])
    assert (labels == 0).all()
    (positive,) = one_event([grid], use_absolute=False)
    assert (positive == -1).all()


def test_clusters_are_numbered_by_decreasing_energy():
    grid = np.zeros((1, 15))
    grid[0, [1, 5, 9, 13]] = [5.0, 9.0, 7.0, -8.0]
    grid[0, 2] = 1.5  # the perimeter counts: 6.5 for the first cluster, below 9 and 7 but above 5 alone
    (labels,) = one_event([grid])
    assert labels[0, [1, 2, 5, 9, 13]].tolist() == [2, 2, 0, 1, 3]
    assert (np.delete(labels[0], [1, 2, 5, 9, 13]) == -1).all()
    (positive,) = one_event([grid], use_absolute=False)
    assert positive[0, [1, 5, 9, 13]].tolist() == [2, 0, 1, -1]
    grid[0, 2] = 2.0  # now the first cluster has 7 too: equal energies go by smallest cell index
    (labels,) = one_event([grid])
    assert labels[0, [1, 5, 9, 13]].tolist() == [1, 0, 2, 3]


def random_events(rng, shapes, n_events, noise):
    """Gaussian noise plus a few injected showers per event (GeV), one array (B, h, w) per layer."""
    layers = [rng.normal(0.0, sigma, size=(n_events,) + shape) for shape, sigma in zip(shapes, noise)]
    for layer, sigma in zip(layers, noise):
        hot = rng.random(layer.shape) < 0.05
        layer[hot] += rng.exponential(6.0 * sigma, size=hot.sum())
    return layers


def test_events_do_not_leak_into_each_other():
    rng = np.random.default_rng(3)
    shapes, noise = [(8, 8), (8, 4), (4, 4)], [1.0, 0.5, 2.0]
    batch = random_events(rng, shapes, 12, noise)
    for layer in batch:
        layer[5] = 0.0  # an empty event inside the batch
    labels = topo_clusters(batch, noise)
    assert all((layer[5] == -1).all() for layer in labels)
    assert sum(int(layer.max()) for layer in labels) > 12  # non-trivial: clusters in most events
    for event in range(12):
        alone = topo_clusters([layer[event:event + 1] for layer in batch], noise)
        for in_batch, single in zip(labels, alone):
            np.testing.assert_array_equal(in_batch[event], single[0])


def reference_labels(layers, noise):
    """Straightforward loop implementation (one event, |zeta|, 4-2-0) with the module's documented tie rules."""
    index = [(layer, i, j) for layer, grid in enumerate(layers) for i, j in product(*map(range, grid.shape))]
    energy = {cell: layers[cell[0]][cell[1:]] for cell in index}
    zeta = {cell: abs(energy[cell]) / noise[cell[0]] for cell in index}
    position = {cell: n for n, cell in enumerate(index)}

    def overlap(n1, a, n2, b):  # intervals [a, a+1)/n1 and [b, b+1)/n2
        return max(Fraction(a, n1), Fraction(b, n2)) < min(Fraction(a + 1, n1), Fraction(b + 1, n2))

    def neighbours(cell):
        layer, i, j = cell
        for other in index:
            if other == cell:
                continue
            if other[0] == layer and abs(other[1] - i) <= 1 and abs(other[2] - j) <= 1:
                yield other
            elif abs(other[0] - layer) == 1:
                (h1, w1), (h2, w2) = layers[layer].shape, layers[other[0]].shape
                if overlap(h1, i, h2, other[1]) and overlap(w1, j, w2, other[2]):
                    yield other

    grows = {cell for cell in index if energy[cell] != 0 and zeta[cell] > 2}
    core, clusters = {}, []
    for cell in index:
        if cell in core or not (energy[cell] != 0 and zeta[cell] > 4):
            continue
        stack, members = [cell], []
        core[cell] = len(clusters)
        while stack:
            current = stack.pop()
            members.append(current)
            for other in neighbours(current):
                if other in grows and other not in core:
                    core[other] = len(clusters)
                    stack.append(other)
        clusters.append(members)
    label = dict(core)
    for cell in index:
        if cell in core or energy[cell] == 0:
            continue
        near = [other for other in neighbours(cell) if other in core]
        if near:
            best = min(near, key=lambda other: (-zeta[other], position[other]))
            label[cell] = core[best]
    energies = [sum(energy[cell] for cell in label if label[cell] == k) for k in range(len(clusters))]
    first = [min(position[cell] for cell in label if label[cell] == k) for k in range(len(clusters))]
    order = sorted(range(len(clusters)), key=lambda k: (-energies[k], first[k]))
    rank = {k: r for r, k in enumerate(order)}
    out = [np.full(grid.shape, -1) for grid in layers]
    for cell, k in label.items():
        out[cell[0]][cell[1:]] = rank[k]
    return out


def test_matches_a_loop_reference_on_random_events():
    rng = np.random.default_rng(11)
    shapes, noise = [(4, 4), (4, 2), (2, 2), (3, 3)], [1.0, 0.7, 1.5, 1.0]
    batch = random_events(rng, shapes, 25, noise)
    for layer in batch:
        layer[rng.random(layer.shape) < 0.1] = 0.0
    labels = topo_clusters(batch, noise)
    for event in range(25):
        expected = reference_labels([layer[event] for layer in batch], noise)
        for got, want in zip(labels, expected):
            np.testing.assert_array_equal(got[event], want)


def test_pure_noise_seed_rate():
    rng = np.random.default_rng(5)
    noise = [0.5, 1.0, 2.0, 1.0, 3.0, 1.0]
    events = [rng.normal(0.0, sigma, size=(256,) + shape) for shape, sigma in zip(STUDY_SHAPES, noise)]
    n_cells = 256 * sum(h * w for h, w in STUDY_SHAPES)
    for absolute, probability in ((True, 2 * norm.sf(4.0)), (False, norm.sf(4.0))):
        labels = topo_clusters(events, noise, use_absolute=absolute)
        # In noise, 4-sigma seeds are so rare that two in one cluster almost never happen: clusters count seeds.
        n_clusters = int((np.max([lab.reshape(256, -1).max(axis=1) for lab in labels], axis=0) + 1).sum())
        expected = n_cells * probability  # about 126 (|zeta|) or 63 (zeta)
        assert abs(n_clusters - expected) < 4.0 * np.sqrt(expected)
        n_seeds = 0
        for layer, sigma, lab in zip(events, noise, labels):
            significance = np.abs(layer / sigma) if absolute else layer / sigma
            assert (lab[significance > 4.0] >= 0).all()
            n_seeds += int((significance > 4.0).sum())
        assert 0.95 * n_seeds <= n_clusters <= n_seeds  # every cluster holds a seed; merges are rare
