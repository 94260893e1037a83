"""The vertex-informed jet flavour tagger: PyG message passing over fully connected track
graphs whose edges carry a frozen vertex finder's same-vertex score.

In the spirit of the downstream classifier of Shlomi et al. (EPJC 81 (2021) 540):

    tracks --DeepSet embedding--> h (n_tracks, W)
    3 x EdgeScoreConv: messages phi_e([h_i, h_j, sum_jet h, s_ij]) summed on two channels,
                       weighted by s_ij (same vertex) and 1 - s_ij (the rest)
    readout: [sum_jet h, jet features] --MLP--> logits (b, c, light)

Only the edge scores differ between the rows of the study; everything else, the seed
included, is the same.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from pipeline.ml.layers import index_mean, index_sum, input_blocks, mlp
from pipeline.ml.module import StudyModule
from pipeline.studies.flavour_tagging.data import CLASSES, JET_FEATURES


class SetEmbedding(nn.Module):
    """A per-track MLP, then a DeepSet layer: each track sees itself and its jet's mean."""

    def __init__(self, n_features: int, width: int):
        super().__init__()
        self.track = mlp([n_features, width, width], final_activation=True)
        self.own = nn.Linear(width, width)
        self.set = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, batch: torch.Tensor, n_jets: int) -> torch.Tensor:
        h = self.track(x)
        mean = index_mean(h, batch, n_jets)
        # index_select, not [batch]: advanced indexing's backward on the CPU adds the rows
        # back with atomic adds over the threads, in an order that changes run to run
        return torch.relu(self.norm(self.own(h) + self.set(mean).index_select(0, batch)))


class EdgeScoreConv(MessagePassing):
    """Message passing whose edge network sees both tracks, the jet-wide sum and the edge
    score, and whose messages travel on two channels weighted by the score s_ij:

        h_i <- LN(h_i + phi_n([h_i, sum_j s_ij a_ij, sum_j (1 - s_ij) b_ij])),
        [a_ij, b_ij] = phi_e([h_i, h_j, sum_jet h, s_ij]).

    The first sum runs over the tracks the finder puts in i's vertex, so a layer can build
    vertex-level quantities (mass, multiplicity, displacement of the vertex) that a plain
    sum over all tracks mixes with everything else. With a constant score (the no-vertex
    control) both channels are plain sums: the same network without vertex information.

    phi_e's first layer is linear in its concatenated input, so it is applied per track,
    not per edge: W [h_i, h_j, S, s_ij] + b = (W_1 h + W_3 S + b)_i + (W_2 h)_j + w_4 s_ij,
    with (n_tracks, W) products gathered onto the (n_edges, W) pairs. A jet of n tracks
    has n (n - 1) edges, so this does the layer's largest matmul n - 1 times less often
    (bench/flavour_tagging.py, docs/benchmarks.md); the parameters are the same ``nn.Linear``'s.
    """

    def __init__(self, width: int):
        super().__init__(aggr="add")
        self.edge = mlp([3 * width + 1, width, 2 * width], final_activation=True)
        self.node = mlp([3 * width, width, width])
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_score: torch.Tensor,
                batch: torch.Tensor, n_jets: int) -> torch.Tensor:
        """h (n_tracks, W), edge_index (2, n_edges) as (j, i), edge_score (n_edges,) in [0, 1],
        batch (n_tracks,) each track's jet; returns the updated h (n_tracks, W)."""
        width = h.shape[-1]
        first = self.edge[0]
        own, other, jet, score = input_blocks(first, [width, width, width, 1])
        jet_sum = index_sum(h, batch, n_jets)
        receiver = torch.addmm(first.bias, h, own.t()) + (jet_sum @ jet.t()).index_select(0, batch)
        messages = self.propagate(edge_index, receiver=receiver, sender=h @ other.t(), edge_score=edge_score,
                                  score_weight=score[:, 0])
        return self.norm(h + self.node(torch.cat([h, messages], dim=-1)))

    def message(self, receiver_i: torch.Tensor, sender_j: torch.Tensor, edge_score: torch.Tensor,
                score_weight: torch.Tensor) -> torch.Tensor:
        score = edge_score.unsqueeze(-1)
        # self.edge[0] applied through its blocks above; the rest of phi_e per edge
        edges = self.edge[1:](receiver_i + sender_j + score * score_weight)  # (n_edges, 2 W): [a_ij, b_ij]
        # [s a, (1 - s) b] as one broadcast product on (n_edges, 2, W): the same numbers as
        # multiplying the halves and concatenating them, without the copies of chunk + cat
        weights = torch.cat([score, 1 - score], dim=-1).unsqueeze(-1)
        return (edges.view(edges.shape[0], 2, -1) * weights).flatten(1)

    def aggregate(self, inputs: torch.Tensor, index: torch.Tensor, ptr: Optional[torch.Tensor] = None,
                  dim_size: Optional[int] = None) -> torch.Tensor:
        """The messages (n_edges, 2 W) summed onto their receiving tracks (``index_sum``)."""
        return index_sum(inputs, index, dim_size)


class FlavourTagger(StudyModule):
    """b / c / light classifier of jets given as graph batches (see ``pipeline.studies.flavour_tagging.data``).

    ``class_weights`` (3,) weight the cross-entropy so that each flavour counts equally
    in training whatever the sample's flavour mix.
    """

    def __init__(self, n_features: int, width: int, message_layers: int, readout_widths: Sequence[int], *,
                 learning_rate: float, class_weights: Sequence[float] = (1.0, 1.0, 1.0), lr_schedule: str):
        super().__init__()
        self.save_hyperparameters()
        self.embedding = SetEmbedding(n_features, width)
        self.layers = nn.ModuleList(EdgeScoreConv(width) for _ in range(message_layers))
        self.readout = mlp([width + len(JET_FEATURES), *readout_widths, len(CLASSES)])
        self.register_buffer("class_weights", torch.tensor(list(class_weights), dtype=torch.float32))

    def forward(self, graph: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (n_jets, 3) in the order of ``CLASSES``."""
        n_jets = len(graph["jet"])
        h = self.embedding(graph["x"], graph["batch"], n_jets)
        for layer in self.layers:
            h = layer(h, graph["edge_index"], graph["edge_score"], graph["batch"], n_jets)
        pooled = index_sum(h, graph["batch"], n_jets)
        return self.readout(torch.cat([pooled, graph["jet"]], dim=-1))

    def loss(self, graph, stage: str) -> torch.Tensor:
        """The class-weighted cross-entropy; at validation also the class-weighted accuracy."""
        logits = self(graph)
        loss = nn.functional.cross_entropy(logits, graph["label"], weight=self.class_weights)
        n = len(graph["label"])
        self.log_loss(stage, loss, n)
        if stage == "val":
            weights = self.class_weights[graph["label"]]
            correct = (logits.argmax(-1) == graph["label"]).to(weights.dtype)
            # Class-weighted accuracy: the accuracy on a flavour-balanced sample.
            self.log_validation("val_accuracy", (weights * correct).sum() / weights.sum(), n, prog_bar=True)
        return loss
