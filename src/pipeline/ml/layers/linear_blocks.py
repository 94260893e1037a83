"""Input blocks: a linear layer over concatenated parts, applied part by part.

For a layer y = W x + b whose input is the concatenation x = [x_1, ..., x_K] of parts of
widths (w_1, ..., w_K), W (out, sum_k w_k) splits into column blocks W_k (out, w_k) with

    W [x_1, ..., x_K] + b = sum_k W_k x_k + b.

A layer over pairs [u_i, u_j] then runs once per node and is broadcast onto the pairs:
(W_1 u_i + b) + W_2 u_j, (N, out) products instead of (N^2, out) (the vertex finders' and
the flavour tagger's edge MLPs, the kNN EdgeConv).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def input_blocks(layer: nn.Linear, widths: Sequence[int]) -> list[torch.Tensor]:
    """The (out, w_k) column blocks W_k of ``layer``'s weight for an input concatenated from
    parts of widths ``widths`` (views, so gradients reach the layer's weight); ValueError
    unless the widths sum to the layer's in_features."""
    if sum(widths) != layer.in_features:
        raise ValueError(f"input blocks of widths {list(widths)} sum to {sum(widths)}, "
                         f"expected the layer's {layer.in_features} inputs")
    return list(layer.weight.split(list(widths), dim=1))
