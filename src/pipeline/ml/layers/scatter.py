"""Scatter sums: rows summed (or averaged) into the slots named by an index, as PyG's
``scatter`` with reduce "sum" / "mean" over dim 0:

    index_sum:   out[k] = sum_{e: index_e = k} x_e                        x (E, ...), index (E,) -> (size, ...)
    index_mean:  out[k] = index_sum(x)[k] / max(#{e: index_e = k}, 1)     (0 for an empty slot)

(the sum over each jet's tracks, or over each track's incoming edges).
"""

from __future__ import annotations

import torch


def index_sum(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of x (E, W) summed by index (E,) in [0, size): out[k] = sum_{e: index_e = k} x_e,
    (size, W).

    ``index_add_``, whose backward is an ``index_select`` of whole rows: PyG's ``scatter``
    sums through ``scatter_add_`` over the index broadcast to x's shape, whose backward
    gathers single elements, a tenth of the tagger's training step. The same sums in the
    same order (rows added one after the other, on any number of threads).
    """
    return x.new_zeros((size, *x.shape[1:])).index_add_(0, index, x)


def index_mean(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of x (E, W) averaged by index (E,): (size, W), 0 where no row has that index."""
    count = torch.bincount(index, minlength=size).clamp(min=1).to(x.dtype)
    return index_sum(x, index, size) / count.unsqueeze(-1)
