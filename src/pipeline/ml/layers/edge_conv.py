"""EdgeConv on a k-nearest-neighbour graph (Wang et al., "Dynamic Graph CNN", ACM TOG 38 (2019) 146).

Nodes of several events (graphs) at once: positions ``pos`` (N, D), features h (N, d),
``batch`` (N,) the event of each node. ``knn_neighbours`` gives each node's k nearest other
nodes of its own event, an (N, k) table of node indices (-1: none); ``NeighbourEdgeConv``
updates every node from its neighbours:

    h_i <- max_{j in kNN(i)} MLP([h_i, h_j - h_i])      (N, d) -> (N, width), 0 without neighbours

the same function and parameters as ``torch_geometric.nn.EdgeConv(MLP, aggr="max")`` on
the same edges, computed per node instead of per edge (``input_blocks``).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.ml.layers.linear_blocks import input_blocks

#: The bit pattern of float32 +inf read as an int32: distances of padding and self.
_FLOAT32_INFINITY_BITS = 0x7F800000


@torch.no_grad()
def knn_neighbours(pos: torch.Tensor, batch: torch.Tensor, k: int, n_events: int | None = None) -> torch.Tensor:
    """Each node's k nearest other nodes of the same event: (N, k') node indices, nearest
    first, k' = min(k, largest event's size - 1), -1 where the node's event has fewer than
    k' other nodes; ``pos`` (N, D), ``batch`` (N,) event of each node (need not be sorted).

    Plain torch: events are padded to (n_events, N_max, D), distances by torch.cdist
    (the exact pairwise formula, not the matrix-product one: each distance depends on its
    pair alone), +inf for padding and self. Ties, exact on a cell grid, go to the lower
    node slot, so an event's graph never depends on the other events: the selection runs
    on the integer key (bits of the float32 distance) * 2^b + slot, whose order is the
    distance's (the bit pattern of a non-negative float is monotonic in its value) with
    ties broken by slot, and whose k' smallest ``torch.topk`` finds without sorting the
    N_max columns (a full stable sort was 16% of a training step of the default network).
    """
    n, device = len(pos), pos.device
    n_events = (int(batch.max()) + 1 if n else 0) if n_events is None else n_events
    counts = torch.bincount(batch, minlength=n_events) if n else torch.zeros(n_events, dtype=torch.long)
    n_max = int(counts.max()) if n else 0
    kk = min(int(k), n_max - 1)
    if kk <= 0:
        return torch.empty(n, 0, dtype=torch.long, device=device)
    order = torch.argsort(batch, stable=True)
    event = batch[order]
    slot = torch.arange(n, device=device) - (torch.cumsum(counts, 0) - counts)[event]
    padded = pos.new_zeros(n_events, n_max, pos.shape[1], dtype=torch.float32)
    padded[event, slot] = pos[order].to(torch.float32)
    node = torch.full((n_events, n_max), -1, dtype=torch.long, device=device)
    node[event, slot] = order
    distance = torch.cdist(padded, padded, compute_mode="donot_use_mm_for_euclid_dist")
    distance.masked_fill_(node[:, None, :] < 0, float("inf"))
    distance.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    bits = max(int(n_max - 1).bit_length(), 1)
    key = distance.view(torch.int32).to(torch.int64).bitwise_left_shift_(bits)
    key += torch.arange(n_max, device=device)
    key, column = torch.topk(key, kk, dim=-1, largest=False, sorted=True)
    finite = (key[event, slot] >> bits) < _FLOAT32_INFINITY_BITS
    neighbours = torch.empty(n, kk, dtype=torch.long, device=device)
    neighbours[order] = torch.where(finite, node[event[:, None], column[event, slot]], -1)
    return neighbours


class NeighbourEdgeConv(nn.Module):
    """EdgeConv (Wang et al., ACM TOG 38 (2019) 146) on a fixed number of neighbours per node:

        h_i <- max_{j in N(i)} MLP([h_i, h_j - h_i])      (0 for a node without neighbours)

    ``neighbours`` (N, k) node indices, -1 for none (``knn_neighbours``). The MLP's first
    layer is linear, so it is applied per node, not per edge:
    W [h_i, h_j - h_i] + b = ((W_a - W_b) h_i + b) + W_b h_j, with the (N, width) products
    gathered onto the (N, k) pairs, and the max is a dense reduction over the k slots. The
    same function and parameters (``self.nn``, the keys of ``torch_geometric.nn.EdgeConv``)
    as PyG's EdgeConv with max aggregation on the same edges (tested against it), without
    PyG's scatter-max backward and the (E, 2 d) concatenation, which were a third of the
    particle-flow graph network's training step (bench/particle_flow.py, docs/benchmarks.md).
    """

    def __init__(self, network: nn.Sequential):
        super().__init__()
        if not isinstance(network[0], nn.Linear):
            raise ValueError("NeighbourEdgeConv: the MLP must start with an nn.Linear")
        self.nn = network

    def forward(self, h: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """h (N, d), neighbours (N, k) -> (N, width)."""
        first = self.nn[0]
        own, other = input_blocks(first, [h.shape[-1]] * 2)
        receiver = torch.addmm(first.bias, h, (own - other).t())  # (N, width)
        sender = h @ other.t()
        # A missing neighbour repeats the nearest one, which leaves the max as it is; a node
        # without any gets 0, as PyG's max aggregation gives it.
        if neighbours.shape[1] == 0:  # no event with two nodes
            neighbours = neighbours.new_full((len(h), 1), -1)
        filled = torch.where(neighbours < 0, neighbours[:, :1], neighbours)
        isolated = filled[:, :1] < 0
        # index_select: its backward is index_add_, several times faster than advanced indexing's
        pairs = sender.index_select(0, filled.clamp(min=0).flatten()).view(*filled.shape, sender.shape[1])
        messages = self.nn[1:](receiver[:, None, :] + pairs)  # (N, k, width')
        return messages.max(dim=1).values.masked_fill(isolated, 0.0)
