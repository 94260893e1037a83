"""Detector cells and the fine grid: a layer of h x w detector cells over a window imaged
at fine x fine cells, each detector cell the block of (fine / h) x (fine / w) fine cells.

    block_sizes:  (h_l, w_l) per layer -> (b_h, b_w) = (fine / h_l, fine / w_l)
    to_fine:      E (B, h, w) -> F (B, h b_h, w b_w),  F[b, I b_h + u, J b_w + v] = E[b, I, J] / (b_h b_w)

so a fine image from ``to_fine`` sums, over each block, to its detector cell's energy (and
in total to the layer's): each fine cell carries the energy density of its detector cell.
"""

from __future__ import annotations

from typing import Sequence

import torch


def block_sizes(layer_shapes: Sequence[Sequence[int]], fine: int) -> list[tuple[int, int]]:
    """(fine / h_l, fine / w_l) fine cells per detector cell of each layer (h_l, w_l);
    ValueError if a layer does not divide the fine grid."""
    blocks = []
    for l, (h, w) in enumerate(layer_shapes):
        if h < 1 or w < 1 or fine % h or fine % w:
            raise ValueError(f"layer {l}: granularity {h} x {w} does not divide the fine {fine} x {fine} grid")
        blocks.append((fine // h, fine // w))
    return blocks


def to_fine(energy: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """A layer image (B, h, w) [GeV] on the fine grid (B, h * block[0], w * block[1]) [GeV]:
    every cell's energy repeated over its block of fine cells and divided by their number,
    so the fine image has the layer's total energy."""
    bh, bw = block
    return energy.repeat_interleave(bh, dim=1).repeat_interleave(bw, dim=2) / (bh * bw)
