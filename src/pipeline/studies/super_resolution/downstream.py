"""Downstream: the particle-flow study's trained CNN fed super-resolved images instead of its
own detector's (Di Bello et al., EPJC 81 (2021) 107, and Kakati, Dreyer, Gross,
arXiv:2409.16052: super-resolution feeding particle flow).

The particle-flow CNN was trained on the particle-flow detector's cells (its second EM
layer at the fine granularity, 64 x 64). This study's detector is coarser there (32 x 32 by
default) and equal elsewhere. Per test event of this study's ``pflow`` file and per
super-resolution method:

1. the method's fine image of every layer, summed to the particle-flow detector's cells
   (``interpolation.to_coarse``): where both detectors have the same cells this gives
   back this detector's readout (exactly for the energy-conserving methods), in the second
   EM layer it gives 64 x 64 cells from 32 x 32 ones;
2. the readout's zero suppression carried over: a particle-flow cell counts where the
   detector cell containing it is in a topo-cluster; elsewhere the image is 0;
3. the CNN's neutral fractions on these images and the event's track image, scored as the
   particle-flow study scores them (``particle_flow.evaluate.per_event``, ``metric_rows``):
   predicted neutral energy sum f E over the counted cells against the neutral pion's true
   deposit in them (from the fine truth), per pi0 energy bin.

``uniform`` is the coarser detector as it is (the CNN's own up-sampling would do the
same), so a method improves the particle flow where its resolution is smaller than
``uniform``'s; the particle-flow study's own ``cnn`` row (its 64 x 64 detector) is the
scale of what a finer detector gives.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from pipeline.ml.checkpoints import load_module
from pipeline.studies.particle_flow.evaluate import per_event
from pipeline.studies.particle_flow.metrics import ENERGY_BINS, metric_rows
from pipeline.studies.particle_flow.models import ParticleFlowModule
from pipeline.studies.particle_flow.train import network_identity
from pipeline.studies.super_resolution.interpolation import to_coarse

#: Columns of downstream.csv: the particle-flow table's (``particle_flow.evaluate.COLUMNS``)
#: with ``method`` the super-resolution method that made the CNN's input.
COLUMNS = ("method", "energy_bin", "n_events", "response_median", "resolution_iqr", "cell_mse",
           "position_resolution")


def particle_flow_network(config: Mapping, checkpoint: str | Path, shapes: Sequence[tuple[int, int]], device):
    """The particle-flow study's trained ``cnn`` (eval mode); ValueError naming the file if
    the checkpoint holds another study's model or method, a network built with other
    settings than ``config``'s particle_flow section, or for other layers than ``shapes``."""
    module = load_module(ParticleFlowModule, checkpoint, network_identity(config, "cnn"))
    built = (module.hparams["method"], [tuple(s) for s in module.hparams["layer_shapes"]])
    if built != ("cnn", list(shapes)):
        raise ValueError(f"{checkpoint}: given as the particle-flow cnn for layers {list(shapes)}, but it holds a "
                         f"{built[0]} network for layers {built[1]}")
    return module.to(device).eval()


def particle_flow_inputs(fine: np.ndarray, coarse: Sequence[np.ndarray], factors: Sequence[tuple[int, int]],
                         pf_factors: Sequence[tuple[int, int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(images, counted) per layer at the particle-flow detector's cells: a fine image
    (B, L, F, F) [GeV] summed to them, and where the readout counts them (bool), from this
    detector's readout ``coarse`` (per layer (B, h, w), 0 off topo-clusters) and both
    detectors' factors (fine cells per cell, (fe, fp) per layer). A particle-flow cell must
    lie inside one of this detector's cells (its factors divide this detector's)."""
    images, counted = [], []
    for layer, ((fe, fp), (pe, pp)) in enumerate(zip(factors, pf_factors)):
        if fe % pe or fp % pp:
            raise ValueError(f"layer {layer}: particle-flow cells of {pe} x {pp} fine cells do not nest in this "
                             f"detector's cells of {fe} x {fp}")
        clustered = np.asarray(coarse[layer]) != 0
        mask = np.repeat(np.repeat(clustered, fe // pe, axis=1), fp // pp, axis=2)
        image = np.asarray(to_coarse(_tensor(fine[:, layer]), (pe, pp)))
        images.append(np.where(mask, image, 0.0).astype(np.float32))
        counted.append(mask)
    return images, counted


def _tensor(array):
    return torch.as_tensor(np.ascontiguousarray(array))


def downstream_rows(batches, factors: Sequence[tuple[int, int]], network, pf_geometry, fine_images, device,
                    methods: Sequence[str]) -> list[dict]:
    """The downstream.csv rows: the particle-flow CNN on every method's images, per pi0 energy bin.

    batches: evaluation batches of this study's sample (``data.SuperResolutionDataset``);
    fine_images(batch) -> {method: (B, L, F, F)} the methods' super-resolved images;
    pf_geometry: the particle-flow detector (``simulation.window_geometry.WindowGeometry``)."""
    pf_factors = [pf_geometry.factors(layer) for layer in range(pf_geometry.n_layers)]
    collected: dict[str, dict[str, list]] = {method: {} for method in methods}
    for index in range(len(batches)):
        batch = batches[index]
        coarse = [np.asarray(c) for c in batch["coarse"]]
        truth = {kind: [np.asarray(to_coarse(_tensor(batch[f"fine_{kind}"][:, layer]), pf_factors[layer]))
                        for layer in range(pf_geometry.n_layers)] for kind in ("charged", "neutral")}
        predictions = fine_images(batch)
        for method in methods:
            images, counted = particle_flow_inputs(np.asarray(predictions[method]), coarse, factors, pf_factors)
            weight = [np.where(m, c + n, 0.0) for m, c, n in zip(counted, truth["charged"], truth["neutral"])]
            target = [np.where(w > 0, np.where(m, n, 0.0) / np.where(w > 0, w, 1), 0.0)
                      for w, m, n in zip(weight, counted, truth["neutral"])]
            with torch.no_grad():
                fractions = network([torch.from_numpy(i).to(device) for i in images],
                                    torch.as_tensor(batch["track"]).to(device))
            fractions = [f.float().cpu().numpy() for f in fractions]
            numbers = per_event(pf_geometry, images, fractions, target, weight)
            numbers["neutral_energy"] = np.asarray(batch["events"]["neutral_energy"])
            for key, value in numbers.items():
                collected[method].setdefault(key, []).append(value)
    rows = []
    for method in methods:
        merged = {key: np.concatenate(values) for key, values in collected[method].items()}
        rows += metric_rows(method, merged, ENERGY_BINS, "neutral_energy", "GeV", "energy_bin")
    return rows


def particle_flow_reference(metrics_csv: str | Path) -> list[dict]:
    """The particle-flow study's own ``cnn`` rows (its detector, metrics.csv), labelled
    ``particle_flow detector``, as the scale beside the downstream rows."""
    with open(metrics_csv, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("method") == "cnn"]
    if not rows:
        raise ValueError(f"{metrics_csv}: no cnn rows; expected the particle-flow study's metrics.csv")
    return [{**{key: (row[key] if key in ("method", "energy_bin") else float(row[key])) for key in COLUMNS},
             "method": "particle_flow detector", "n_events": int(row["n_events"])} for row in rows]
