"""The super-resolution study's non-learned methods and its block algebra (torch).

A detector cell (I, J) of a layer with factors (fe, fp) (fine cells per detector cell in
eta and in phi) covers the fine cells i in [I fe, (I + 1) fe), j in [J fp, (J + 1) fp).
Both methods conserve every detector cell's energy exactly: to_coarse(method(E)) = E.

* ``uniform``: every detector cell's energy E_IJ shared equally, e_ij = E_IJ / (fe fp);
* ``bicubic``: the energy density E_IJ / (fe fp) interpolated bicubically to the fine cell
  centres (``torch.nn.functional.interpolate``, align_corners=False, edges replicated),
  b_ij; negative values clipped, then renormalised per detector cell,

      e_ij = E_IJ max(b_ij, 0) / sum_{kl in IJ} max(b_kl, 0),

  and the uniform share where that sum is 0 or E_IJ <= 0 (a noise cell: a negative energy
  has no shape to interpolate, and a uniform share keeps it where it was measured).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.ml.layers import to_fine
from pipeline.studies.super_resolution.methods import INTERPOLATIONS


def to_coarse(fine: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(..., h fe, w fp) fine images [GeV] -> (..., h, w): the sum over each detector cell's
    block of fe x fp fine cells; ValueError if the image does not divide into blocks."""
    fe, fp = (int(f) for f in factors)
    *lead, n_eta, n_phi = fine.shape
    if fe < 1 or fp < 1 or n_eta % fe or n_phi % fp:
        raise ValueError(f"to_coarse: a {n_eta} x {n_phi} image does not divide into blocks of {fe} x {fp} cells")
    return fine.reshape(*lead, n_eta // fe, fe, n_phi // fp, fp).sum(dim=(-3, -1))


def uniform(coarse: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(B, h, w) detector cells [GeV] -> (B, h fe, w fp): e_ij = E_IJ / (fe fp)."""
    _check(coarse, factors)
    return to_fine(coarse, (int(factors[0]), int(factors[1])))


def bicubic_shares(coarse: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(B, h, w) detector cells [GeV] -> (B, h fe, w fp): every fine cell's share of its
    detector cell's energy in the bicubic interpolation of the module docstring,
    max(b_ij, 0) / sum_{kl in IJ} max(b_kl, 0), or 1 / (fe fp) where that is undefined; the
    shares of every detector cell sum to 1 (all 1 for factors (1, 1))."""
    _check(coarse, factors)
    fe, fp = int(factors[0]), int(factors[1])
    coarse = coarse if coarse.is_floating_point() else coarse.float()
    n, h, w = coarse.shape
    if fe == fp == 1:
        return torch.ones_like(coarse)
    # The size (not a scale factor) puts the samples exactly at the fine cells' centres.
    interpolated = F.interpolate((coarse / (fe * fp))[:, None], size=(h * fe, w * fp), mode="bicubic",
                                 align_corners=False)[:, 0]
    blocks = interpolated.clamp(min=0).reshape(n, h, fe, w, fp)
    total = blocks.sum(dim=(2, 4), keepdim=True)
    shaped = (total > 0) & (coarse[:, :, None, :, None] > 0)
    shares = torch.where(shaped, blocks / torch.where(shaped, total, torch.ones_like(total)),
                         torch.full_like(blocks, 1.0 / (fe * fp)))
    return shares.reshape(n, h * fe, w * fp)


def bicubic(coarse: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """(B, h, w) detector cells [GeV] -> (B, h fe, w fp): the renormalised bicubic
    interpolation of the module docstring, every detector cell's energy times its
    ``bicubic_shares``; factors (1, 1) return a copy of the input."""
    fe, fp = int(factors[0]), int(factors[1])
    shares = bicubic_shares(coarse, (fe, fp))
    return shares * coarse.to(shares.dtype).repeat_interleave(fe, dim=1).repeat_interleave(fp, dim=2)


#: The interpolations by name (the names of ``methods.INTERPOLATIONS``).
FUNCTIONS = {"uniform": uniform, "bicubic": bicubic}


def super_resolve(method: str, coarse_layers: Sequence[torch.Tensor | np.ndarray],
                  factors: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, n_layers, fine, fine) fine images [GeV] of the layers' detector cells
    (each (B, h_l, w_l) [GeV], tensors or arrays) by an interpolation of ``INTERPOLATIONS``;
    ValueError for another method or layers that do not map onto one fine grid."""
    if method not in FUNCTIONS:
        raise ValueError(f"super_resolve: unknown method {method!r}; expected one of {INTERPOLATIONS}")
    if len(coarse_layers) != len(factors):
        raise ValueError(f"super_resolve: {len(coarse_layers)} layers but {len(factors)} factors; expected one each")
    images = [FUNCTIONS[method](torch.as_tensor(layer), block) for layer, block in zip(coarse_layers, factors)]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"super_resolve: the layers give fine images of shapes {sorted(shapes)}; "
                         f"expected one (B, fine, fine) for all")
    return torch.stack(images, dim=1)


def _check(coarse: torch.Tensor, factors: Sequence[int]) -> None:
    if coarse.ndim != 3:
        raise ValueError(f"expected a (B, h, w) layer image, got shape {tuple(coarse.shape)}")
    if len(factors) != 2 or min(int(f) for f in factors) < 1:
        raise ValueError(f"expected factors (fe, fp) of at least 1 fine cell per detector cell, got {factors}")
