"""The signed log of calorimeter energies, the input transform of the image networks:

    a(E) = asinh(E / scale) = log(E / scale + sqrt((E / scale)^2 + 1))

linear through zero (a(E) ~ E / scale for |E| << scale, so noise cells of either sign stay
small and symmetric), logarithmic above (a(E) ~ sign(E) log(2 |E| / scale) for |E| >> scale),
so energies from the noise (~0.01 GeV) to showers (~100 GeV) enter as O(1) numbers.
"""

from __future__ import annotations

import torch


def signed_log(energy: torch.Tensor, scale: float) -> torch.Tensor:
    """asinh(E / scale) of energies E [GeV] of any shape, ``scale`` [GeV]; same shape, dimensionless."""
    return torch.asinh(energy / scale)
