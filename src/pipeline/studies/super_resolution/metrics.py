"""The super-resolution study's metrics: image metrics per layer against the fine truth
(streamed over batches, torch) and the physics table's row (NumPy).

Per layer, over events (B) and fine cells, with pred and truth (B, fine, fine) [GeV] and the
detector cells E (B, h, w) [GeV] the method started from:

* ``mse``: mean of (pred - truth)^2 over events and fine cells [GeV^2];
* ``psnr`` [dB], ``ssim``: torchmetrics' ``peak_signal_noise_ratio`` and
  ``structural_similarity_index_measure`` (their defaults: Gaussian window of sigma 1.5
  cells, reflected edges) per event, of both images divided by the truth image's maximum
  (data range 1, computed in float32), averaged over the events whose truth peaks above
  ``min_peak`` (1 MeV: a layer without a shower holds at most stray sub-deposits, whose
  normalisation would blow the readout's noise up to infinities). An exact prediction has PSNR +inf (torchmetrics: 10 log10(1 / 0)), so the mean
  is +inf as soon as one event is exact;
* ``energy_closure``: mean over events of sum |to_coarse(pred) - E| / sum |E| (0: every
  detector cell keeps its energy), events with sum |E| > 0;
* ``energy_bias``: mean over the same events of (sum pred - sum E) / sum |E|.

The physics row (``physics_row``) of a method's two-cluster splits (``physics.split_mass``):
the fraction of events resolved, the diphoton mass peak and width (``physics.mass_summary``),
and the median and IQR of the separation residual against the fine truth's split.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from pipeline.studies.super_resolution.interpolation import to_coarse
from pipeline.studies.super_resolution.physics import mass_summary

#: The image metrics' names, in the tables' order.
IMAGE_METRICS = ("mse", "psnr", "ssim", "energy_closure", "energy_bias")


class ImageMetrics:
    """The image metrics (module docstring) of ``n_layers`` layers, accumulated over batches.

    ``update`` adds a batch; ``per_layer`` gives one dict per layer: ``layer`` (its name, or
    its index without ``layer_names``), ``n_events`` and the ``IMAGE_METRICS`` (NaN with no
    event to average)."""

    def __init__(self, n_layers: int, layer_names: Sequence[str] | None = None, min_peak: float = 1e-3):
        if layer_names is not None and len(layer_names) != n_layers:
            raise ValueError(f"ImageMetrics: {len(layer_names)} layer names for {n_layers} layers")
        self.n_layers = n_layers
        self.min_peak = min_peak
        self.layer_names = list(layer_names) if layer_names is not None else list(range(n_layers))
        # Per layer: [sum, count] of every metric (counts differ: empty truth or empty coarse images are skipped).
        self._sums = np.zeros((n_layers, len(IMAGE_METRICS)))
        self._counts = np.zeros((n_layers, len(IMAGE_METRICS)))
        self.n_events = 0

    def update(self, pred: torch.Tensor, truth: torch.Tensor, coarse_layers: Sequence[torch.Tensor | np.ndarray],
               factors: Sequence[Sequence[int]]) -> None:
        """Add a batch: pred, truth (B, n_layers, fine, fine) [GeV], coarse_layers the
        detector cells (B, h_l, w_l) [GeV] per layer, factors (fe, fp) per layer."""
        pred, truth = torch.as_tensor(pred), torch.as_tensor(truth)
        if pred.shape != truth.shape or pred.ndim != 4 or pred.shape[1] != self.n_layers:
            raise ValueError(f"ImageMetrics.update: pred {tuple(pred.shape)} and truth {tuple(truth.shape)}; "
                             f"expected both (B, {self.n_layers}, fine, fine)")
        if len(coarse_layers) != self.n_layers or len(factors) != self.n_layers:
            raise ValueError(f"ImageMetrics.update: {len(coarse_layers)} coarse layers and {len(factors)} factors; "
                             f"expected {self.n_layers} each")
        self.n_events += pred.shape[0]
        for layer in range(self.n_layers):
            p, t = pred[:, layer].double(), truth[:, layer].double()
            coarse = torch.as_tensor(coarse_layers[layer]).to(p)
            values = [((p - t) ** 2).mean(dim=(1, 2))]
            scale = t.amax(dim=(1, 2))
            keep = scale > self.min_peak
            if keep.any():
                # In float32: torchmetrics' SSIM convolutions run ten times slower in float64 on CPUs.
                s = scale[keep][:, None, None, None]
                pn, tn = (p[keep][:, None] / s).float(), (t[keep][:, None] / s).float()
                values.append(peak_signal_noise_ratio(pn, tn, data_range=1.0, reduction="none", dim=(1, 2, 3)))
                values.append(structural_similarity_index_measure(pn, tn, data_range=1.0, reduction="none"))
            else:
                values += [p.new_zeros(0), p.new_zeros(0)]
            norm = coarse.abs().sum(dim=(1, 2))
            has = norm > 0
            closure = (to_coarse(p, factors[layer]) - coarse).abs().sum(dim=(1, 2))
            values.append((closure / norm)[has])
            values.append(((p.sum(dim=(1, 2)) - coarse.sum(dim=(1, 2))) / norm)[has])
            for k, value in enumerate(values):
                self._sums[layer, k] += float(value.sum())
                self._counts[layer, k] += value.numel()

    def per_layer(self) -> list[dict]:
        """One dict per layer (class docstring)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self._counts > 0, self._sums / self._counts, np.nan)
        return [{"layer": name, "n_events": self.n_events, **dict(zip(IMAGE_METRICS, map(float, row)))}
                for name, row in zip(self.layer_names, means)]


def quantile_summary(values: np.ndarray) -> tuple[float, float]:
    """(median, IQR) of the finite values; NaN if none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return float(median), float(q75 - q25)


def physics_row(split: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray] | None = None,
                select: np.ndarray | None = None) -> dict[str, float]:
    """The physics table's numbers of one method's splits (``physics.split_mass``, (B,) arrays
    with ``resolved``, ``mass``, ``separation``) over the ``select``ed events (all without):
    ``n_events``, ``resolved_fraction``, ``mass_n``, ``mass_peak``, ``mass_width`` [GeV] of the
    resolved events, and with the fine truth's splits ``truth``, ``separation_residual_median``
    and ``separation_residual_iqr`` [rad] of separation - truth separation over the events
    resolved by both."""
    resolved = np.asarray(split["resolved"], bool)
    select = np.ones(len(resolved), bool) if select is None else np.asarray(select, bool)
    mass = mass_summary(np.asarray(split["mass"])[select & resolved])
    n = int(select.sum())
    row = {"n_events": n, "resolved_fraction": float(resolved[select].mean()) if n else float("nan"),
           "mass_n": mass["n"], "mass_peak": mass["peak"], "mass_width": mass["width"]}
    if truth is not None:
        both = select & resolved & np.asarray(truth["resolved"], bool)
        residual = np.asarray(split["separation"])[both] - np.asarray(truth["separation"])[both]
        row["separation_residual_median"], row["separation_residual_iqr"] = quantile_summary(residual)
    return row
