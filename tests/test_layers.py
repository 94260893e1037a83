"""The shared layers (``pipeline.ml.layers``) on hand-computed cases: every expected number
below is worked out by hand from the formula in the layer's docstring."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.ml.layers import (
    NeighbourEdgeConv,
    block_sizes,
    dense_stack,
    index_mean,
    index_sum,
    input_blocks,
    knn_neighbours,
    mlp,
    signed_log,
    to_fine,
)


def test_mlp_widths_and_activations():
    net = mlp([3, 5, 2])
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(3, 5), (5, 2)]
    assert [type(m) for m in mlp([3, 5, 2], final_activation=True)] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert net(torch.zeros(4, 7, 3)).shape == (4, 7, 2)


def test_mlp_computes_the_stack():
    """One hidden unit: y = w2 relu(w1 x + b1) + b2 with w1 = [1, -1], b1 = 0, w2 = 2, b2 = 1."""
    net = mlp([2, 1, 1])
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[0].bias.zero_()
        net[2].weight.fill_(2.0)
        net[2].bias.fill_(1.0)
    x = torch.tensor([[3.0, 1.0], [1.0, 3.0]])  # hidden 2 and relu(-2) = 0
    assert net(x).squeeze(1).tolist() == [5.0, 1.0]


def test_dense_stack_has_relu_and_dropout_after_every_layer():
    net = dense_stack([4, 3, 2], dropout=0.25)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Dropout] * 2
    assert all(m.p == 0.25 for m in net if isinstance(m, nn.Dropout))
    assert net.eval()(torch.zeros(6, 4)).shape == (6, 2)


def test_input_blocks_split_the_weight_by_columns():
    layer = nn.Linear(5, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(10.0).view(2, 5))  # [[0 1 2 3 4], [5 6 7 8 9]]
    own, other = input_blocks(layer, [2, 3])
    assert own.tolist() == [[0.0, 1.0], [5.0, 6.0]] and other.tolist() == [[2.0, 3.0, 4.0], [7.0, 8.0, 9.0]]
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0, -1.0])
    # W [a, b] = W_1 a + W_2 b: [2 + (2 - 4), 17 + (7 - 9)] = [0, 15] before the bias
    assert (own @ a + other @ b).tolist() == [0.0, 15.0]
    torch.testing.assert_close(own @ a + other @ b + layer.bias, layer(torch.cat([a, b])))
    with pytest.raises(ValueError, match=r"widths \[2, 2\] sum to 4, expected the layer's 5 inputs"):
        input_blocks(layer, [2, 2])


def test_knn_neighbours_on_a_hand_made_point_set():
    """Event 0 on a line at x = 0, 1, 3; event 1 at x = 10, 10.5, listed first (unsorted batch)."""
    pos = torch.tensor([[10.0], [0.0], [1.0], [3.0], [10.5]])
    batch = torch.tensor([1, 0, 0, 0, 1])
    neighbours = knn_neighbours(pos, batch, k=2)
    # x = 0: 1 (distance 1), 3 (3); x = 1: 0 (1), 3 (2); x = 3: 1 (2), 0 (3); event 1 has one other node.
    assert neighbours.tolist() == [[4, -1], [2, 3], [1, 3], [2, 1], [0, -1]]
    # k larger than any event: as many as the largest event allows (3 nodes: 2 others)
    assert knn_neighbours(pos, batch, k=5).shape == (5, 2)


def test_knn_ties_go_to_the_lower_node():
    """x = 0 has x = -1 and x = 1 at the same distance: the lower node index comes first."""
    pos = torch.tensor([[0.0], [1.0], [-1.0]])
    assert knn_neighbours(pos, torch.zeros(3, dtype=torch.long), k=1).tolist() == [[1], [0], [0]]


def test_neighbour_edge_conv_by_hand():
    """One linear layer, W = [a, b] = [1, 2], bias 0.5, on scalar features: the message of
    j to i is a h_i + b (h_j - h_i) + 0.5, the update its max over i's neighbours."""
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.fill_(0.5)
    conv = NeighbourEdgeConv(nn.Sequential(layer))
    h = torch.tensor([[1.0], [2.0], [4.0]])
    neighbours = torch.tensor([[1, 2], [0, -1], [-1, -1]])
    # node 0: max(1 + 2 + 0.5, 1 + 6 + 0.5) = 7.5; node 1: 2 - 2 + 0.5 = 0.5; node 2: no neighbours, 0
    assert conv(h, neighbours).squeeze(1).tolist() == [7.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="must start with an nn.Linear"):
        NeighbourEdgeConv(nn.Sequential(nn.ReLU(), layer))


def test_block_sizes_and_to_fine_on_a_2x2_layer():
    assert block_sizes([(2, 2), (1, 2), (4, 4)], 4) == [(2, 2), (4, 2), (1, 1)]
    with pytest.raises(ValueError, match="layer 1: granularity 3 x 2 does not divide the fine 4 x 4 grid"):
        block_sizes([(2, 2), (3, 2)], 4)
    energy = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B = 1, 2, 2) [GeV]
    fine = to_fine(energy, (2, 2))
    assert fine.tolist() == [[[0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5],
                              [0.75, 0.75, 1.0, 1.0], [0.75, 0.75, 1.0, 1.0]]]
    assert to_fine(energy, (1, 2)).tolist() == [[[0.5, 0.5, 1.0, 1.0], [1.5, 1.5, 2.0, 2.0]]]
    assert fine.sum().item() == energy.sum().item() == 10.0


def test_signed_log_values():
    scale = 0.01
    energy = torch.tensor([0.0, 0.01, -0.01, 1e-6, 100.0], dtype=torch.float64)
    a = signed_log(energy, scale)
    assert a[0] == 0.0
    assert a[1].item() == pytest.approx(math.log(1 + math.sqrt(2)), rel=1e-15)  # asinh(1)
    assert a[2] == -a[1]  # odd: noise of either sign stays symmetric
    assert a[3].item() == pytest.approx(1e-4, rel=1e-8)  # linear near 0: E / scale
    assert a[4].item() == pytest.approx(math.log(2 * 100.0 / scale), rel=1e-9)  # log(2 E / scale) far above


def test_index_sum_and_mean_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    index = torch.tensor([1, 0, 1])
    assert index_sum(x, index, 3).tolist() == [[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]]
    assert index_mean(x, index, 3).tolist() == [[3.0, 4.0], [3.0, 4.0], [0.0, 0.0]]  # empty slot: 0
