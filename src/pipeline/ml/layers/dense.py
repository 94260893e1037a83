"""Dense stacks: fully connected layers of given widths with ReLU between them.

For widths (w_0, ..., w_K) and an input x (..., w_0):

    h_0 = x,  h_k = act(W_k h_{k-1} + b_k),  W_k (w_k, w_{k-1}),  output h_K (..., w_K)

``mlp``: act = ReLU after every layer but the last (after the last too with
``final_activation``); ``dense_stack``: ReLU then dropout after every layer, the last included.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn


def mlp(widths: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them: (..., widths[0]) -> (..., widths[-1])."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(widths) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def dense_stack(widths: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear layers of the given widths, each followed by ReLU and dropout (probability
    ``dropout``): (..., widths[0]) -> (..., widths[-1])."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)
