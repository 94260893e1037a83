"""Learned vertex finders: a track encoder, a pairwise edge classifier, one Lightning module.

All models share the same pipeline (Shlomi et al., EPJC 81 (2021) 540):

    tracks (B, N, F) --encoder--> embeddings (B, N, D) --pairs--> edge MLP --> (B, N, N) logits

and differ only in the encoder:

* ``set2graph``: a permutation-equivariant set-to-set encoder (DeepSets layers with
  attention), then the S2G+ broadcast [u_i, u_j, sum_k u_k] of node pairs;
* ``track_pair``: no encoder, the edge MLP sees the two tracks' features only;
* ``rnn``: stacked bidirectional GRUs over the pT-ordered tracks.

The loss is the binary cross-entropy over the jets' track pairs minus the per-jet soft F1; the
partition is recovered from the symmetrised edge scores (threshold, connected components).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.ml.layers import input_blocks, mlp
from pipeline.ml.module import StudyModule
from pipeline.partition import partition_dense
from pipeline.studies.vertexing.methods import LEARNED
from pipeline.studies.vertexing.metrics import jet_metrics


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the set dimension of x (B, N, D) with mask (B, N); returns (B, 1, D)."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)


class DeepSetLayer(nn.Module):
    """An equivariant layer: each track's update sees itself and its own attention-weighted
    view of the set (scaled dot-product attention over the jet's tracks), or, without
    attention, the set's mean. Hidden layers are normalised per track (LayerNorm).

    With attention, for tracks x (B, N, D_in):

        a = softmax_j(q_i . k_j / sqrt(d)),  q = W_q x + b_q,  k = W_k x + b_k  (B, N, N)
        y_i = LN(W_own x_i + b_own + W_set sum_j a_ij x_j + b_set)             (B, N, D_out)

    The four linear maps of x run as one matmul with their weights stacked, and where
    D_out <= D_in the set map goes before the average, sum_j a_ij (W_set x_j), so the
    (B, N, N) product runs on the narrower width: the same function and parameters (tested),
    one large matmul instead of four small ones forward and backward (bench/vertexing.py,
    docs/benchmarks.md).
    """

    def __init__(self, width_in: int, width_out: int, attention: bool = True, normalise: bool = True,
                 attention_width: int = 32):
        super().__init__()
        self.own = nn.Linear(width_in, width_out)
        self.set = nn.Linear(width_in, width_out)
        self.query = nn.Linear(width_in, attention_width) if attention else None
        self.key = nn.Linear(width_in, attention_width) if attention else None
        self.norm = nn.LayerNorm(width_out) if normalise else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.query is None:
            return self.norm(self.own(x) + self.set(masked_mean(x, mask).expand_as(x)))
        # Attention rows sum to 1 (0 only in a jet without tracks, whose context is 0 either
        # way), so b_set joins b_own whichever side of the average W_set goes.
        set_first = self.set.out_features <= self.set.in_features
        maps = [self.own, self.query, self.key, *([self.set] if set_first else [])]
        weight = torch.cat([m.weight for m in maps])
        bias = torch.cat([self.own.bias + self.set.bias, self.query.bias, self.key.bias,
                          *([torch.zeros_like(self.set.bias)] if set_first else [])])
        own, q, k, *value = nn.functional.linear(x, weight, bias).split([m.out_features for m in maps], dim=-1)
        score = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
        score = score.masked_fill(~mask.unsqueeze(1), float("-inf"))
        attention = torch.softmax(score, dim=-1).nan_to_num(0.0)  # (B, N, N): track i looks at j
        if set_first:
            return self.norm(own + attention @ value[0])
        return self.norm(own + nn.functional.linear(attention @ x, self.set.weight))


class SetEncoder(nn.Module):
    """Set2Graph's set-to-set encoder: DeepSet layers with ReLU between them; the last
    layer (the per-track embedding, width 5 in the EPJC model) is not normalised."""

    def __init__(self, n_features: int, widths: Sequence[int]):
        super().__init__()
        sizes = [n_features, *widths]
        last = len(widths) - 1
        self.layers = nn.ModuleList(
            DeepSetLayer(a, b, normalise=k < last) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x, mask)
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x * mask.unsqueeze(-1)


class IdentityEncoder(nn.Module):
    """No information shared between tracks: the Track Pair model's 'encoder'."""

    def __init__(self, n_features: int):
        super().__init__()
        self.out_features = n_features

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask.unsqueeze(-1)


class RecurrentEncoder(nn.Module):
    """Stacked bidirectional GRUs over the tracks in pT order (padding at the end)."""

    def __init__(self, n_features: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out_features = 2 * hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * mask.unsqueeze(-1)


class EdgeClassifier(nn.Module):
    """Broadcast node pairs to edge features and score them with an MLP.

    Edge features of (i, j): [u_i, u_j] and, with ``with_set_sum``, the S2G+ term
    sum_k u_k. Scores are symmetrised: s_ij = (f(i, j) + f(j, i)) / 2.

    The MLP's first layer is linear in the concatenation, so it runs per track, not per
    pair: W [u_i, u_j, t] + b = (W_1 u_i + W_3 t + b) + W_2 u_j, (B, N, H) products
    broadcast to (B, N, N, H); only the activation and the later layers run on the N^2
    pairs. The same function and parameters as the concatenated form (tested); it spares
    the (B, N, N, 2 D or 3 D) edge tensor and N - 1 of every N first-layer products.
    """

    def __init__(self, node_features: int, hidden: Sequence[int], *, with_set_sum: bool):
        super().__init__()
        self.with_set_sum = with_set_sum
        width = node_features * (3 if with_set_sum else 2)
        self.mlp = mlp([width, *hidden, 1])

    def forward(self, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """u (B, N, D) track embeddings, mask (B, N) -> symmetric logits (B, N, N)."""
        d = u.shape[-1]
        first = self.mlp[0]
        own, other, *set_sum = input_blocks(first, [d] * (3 if self.with_set_sum else 2))
        receiver = nn.functional.linear(u, own, first.bias)  # (B, N, H): W_1 u_i + b
        if self.with_set_sum:
            # The set term as a mean, not a sum: a sum grows with the jet's track count
            # and slowed training down markedly in our tests.
            receiver = receiver + nn.functional.linear(masked_mean(u, mask), set_sum[0])
        sender = nn.functional.linear(u, other)
        logits = self.mlp[1:](receiver.unsqueeze(2) + sender.unsqueeze(1)).squeeze(-1)
        return 0.5 * (logits + logits.transpose(1, 2))


def pair_targets(vertex: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-vertex targets (B, N, N) float and the mask of real pairs i != j (B, N, N) bool."""
    same = (vertex.unsqueeze(2) == vertex.unsqueeze(1)).to(torch.float32)
    pairs = mask.unsqueeze(2) & mask.unsqueeze(1)
    pairs &= ~torch.eye(vertex.shape[1], dtype=torch.bool, device=vertex.device)
    return same, pairs


def vertex_finding_loss(logits: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the batch's real pairs minus the mean over jets of each
    jet's soft F1 of the same-vertex edges.

    The F1 term is per jet, as in the authors' code, because the metric is a per-jet mean:
    an F1 pooled over the batch lets the many pairs of large jets dominate, and it cost
    Set2Graph 0.03 in b-jet F1 in our tests. Jets without a true same-vertex pair add
    nothing to it (their F1 is 0 whatever the prediction).
    """
    weights = pairs.to(logits.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weights, reduction="sum")
    bce = bce / weights.sum().clamp(min=1)
    p = torch.sigmoid(logits) * weights
    tp = (p * target).sum((1, 2))
    fp = (p * (1 - target)).sum((1, 2))
    fn = ((weights - p) * target).sum((1, 2))
    soft_f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1e-6)
    return bce - soft_f1.mean()


#: The settings each learned vertex finder reads (the schema's ``vertexing.network``, no defaults here).
NETWORK_KEYS = {"set2graph": ("set_widths", "edge_widths"), "track_pair": ("pair_widths",),
                "rnn": ("rnn_hidden", "rnn_layers", "edge_widths")}


def build_network(name: str, n_features: int, settings: Mapping) -> tuple[nn.Module, nn.Module]:
    """(encoder, edge classifier) of a learned vertex finder named in LEARNED;
    ``settings`` must hold the finder's NETWORK_KEYS (ValueError naming a missing one)."""
    if name not in NETWORK_KEYS:
        raise ValueError(f"unknown vertex finder {name!r}; expected one of {LEARNED}")
    missing = [key for key in NETWORK_KEYS[name] if key not in settings]
    if missing:
        raise ValueError(f"vertex finder {name!r}: network settings missing {missing}")
    if name == "set2graph":
        encoder = SetEncoder(n_features, settings["set_widths"])
        edges = EdgeClassifier(encoder.out_features, settings["edge_widths"], with_set_sum=True)
    elif name == "track_pair":
        encoder = IdentityEncoder(n_features)
        edges = EdgeClassifier(encoder.out_features, settings["pair_widths"], with_set_sum=False)
    else:
        encoder = RecurrentEncoder(n_features, settings["rnn_hidden"], settings["rnn_layers"])
        edges = EdgeClassifier(encoder.out_features, settings["edge_widths"], with_set_sum=False)
    return encoder, edges


class VertexFinder(StudyModule):
    """A learned vertex finder: encoder + edge classifier, trained on same-vertex labels."""

    def __init__(self, name: str, n_features: int, settings: Mapping, *, learning_rate: float, threshold: float,
                 lr_schedule: str):
        super().__init__()
        self.save_hyperparameters()
        self.encoder, self.edges = build_network(name, n_features, settings)
        self.threshold = threshold

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric edge logits (B, N, N) for padded tracks x (B, N, F) and mask (B, N)."""
        return self.edges(self.encoder(x, mask), mask)

    def loss(self, batch: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        """``vertex_finding_loss`` of the batch; at validation also the partition's mean F1 and ARI."""
        logits = self(batch["x"], batch["mask"])
        target, pairs = pair_targets(batch["vertex"], batch["mask"])
        loss = vertex_finding_loss(logits, target, pairs)
        n = len(batch["n_tracks"])
        self.log_loss(stage, loss, n)
        if stage == "val":
            labels = self.partition(logits, batch["mask"])
            metrics = batch_metrics(batch["vertex"], labels, batch["mask"])
            for key in ("f1", "ari"):
                self.log_validation(f"val_{key}", metrics[key], n, prog_bar=key == "f1")
        return loss

    def partition(self, logits: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """Predicted vertex labels (B, N), -1 on padding."""
        adjacency = (torch.sigmoid(logits) > self.threshold).cpu().numpy()
        return partition_dense(adjacency, mask.cpu().numpy())


def batch_metrics(vertex: torch.Tensor, labels: np.ndarray, mask: torch.Tensor) -> dict[str, float]:
    """Mean per-jet F1 and ARI over the scored jets of a padded batch."""
    m = mask.cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(m.sum(1))])
    result = jet_metrics(vertex.cpu().numpy()[m], labels[m], offsets)
    scored = result["scored"]
    return {k: float(result[k][scored].mean()) if scored.any() else 0.0 for k in ("f1", "ari")}
