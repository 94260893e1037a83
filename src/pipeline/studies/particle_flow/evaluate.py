"""Scoring every particle-flow method on the same test events: the tables, the figures and
the MLflow runs ``particle_flow.evaluate.<method>``.

The test file is streamed once in batches; each batch goes through every method (the
parametrised baseline and each trained network), and only per-event numbers are kept
(``per_event``), so memory stays flat. The metrics are ``metrics.py``'s.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from pipeline.io.outputs import write_csv, write_text
from pipeline.ml.checkpoints import check_checkpoint_names, checkpoint_run_id, load_module
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.calibration import baseline_inputs
from pipeline.studies.particle_flow.data import ParticleFlowBatches
from pipeline.studies.particle_flow.figures import plot_event_displays, plot_resolution, plot_responses
from pipeline.studies.particle_flow.methods import BASELINE, LEARNED, METHODS
from pipeline.studies.particle_flow.metrics import (
    DISTANCE_BINS,
    ENERGY_BINS,
    barycentres,
    metric_rows,
    weighted_mse,
)
from pipeline.studies.particle_flow.models import ParticleFlowModule
from pipeline.studies.particle_flow.parametrised import subtract
from pipeline.studies.particle_flow.templates import Templates
from pipeline.studies.particle_flow.train import network_identity

log = logging.getLogger(__name__)

#: Events per inference batch.
INFERENCE_BATCH = 256
#: Events shown in the event displays (the first of the test file).
N_DISPLAYS = 3
#: The layer whose neutral-energy barycentre gives the position resolution (em2).
POSITION_LAYER = 1
COLUMNS = ("method", "energy_bin", "n_events", "response_median", "resolution_iqr", "cell_mse",
           "position_resolution")


def per_event(geometry: WindowGeometry, energy: Sequence[np.ndarray], fraction: Sequence[np.ndarray],
              target: Sequence[np.ndarray], weight: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-event numbers of one method on a batch, everything per layer (B, n_eta, n_phi).

    energy: measured cell energies [GeV]; fraction: the method's neutral fractions;
    target, weight: the true fractions and the true total deposits [GeV]. Returns
    (B,) ``predicted`` (sum f E) and ``true`` (sum f_true E_true) neutral energies [GeV],
    ``mse_num``, ``mse_den`` (B,) and ``mse_num_layer``, ``mse_den_layer`` (B, n_layers)
    (sums of w (f - f_true)^2 and of w), and (B, 2) ``position_pred``, ``position_true``:
    the neutral barycentres in the POSITION_LAYER, window-relative (eta, phi).
    """
    def per_layer(values):
        return np.stack([v.reshape(len(v), -1).sum(axis=1) for v in values], axis=1)

    num = per_layer([w * (f - t) ** 2 for f, t, w in zip(fraction, target, weight)])
    den = per_layer(weight)
    eta, phi = geometry.cell_centres(POSITION_LAYER)
    return {
        "predicted": per_layer([f * e for f, e in zip(fraction, energy)]).sum(axis=1),
        "true": per_layer([t * w for t, w in zip(target, weight)]).sum(axis=1),
        "mse_num": num.sum(axis=1), "mse_den": den.sum(axis=1), "mse_num_layer": num, "mse_den_layer": den,
        "position_pred": barycentres(fraction[POSITION_LAYER] * energy[POSITION_LAYER], eta, phi),
        "position_true": barycentres(target[POSITION_LAYER] * weight[POSITION_LAYER], eta, phi),
    }


def subtraction_fractions(templates, batch: Mapping) -> list[np.ndarray]:
    """The parametrised baseline's neutral fractions per layer for an evaluation batch: what
    the subtraction leaves of each cell over the cell's energy (0 for empty cells)."""
    inputs = baseline_inputs(batch)
    remaining, _ = subtract(templates, *inputs)
    return [np.where(e != 0, r / np.where(e != 0, e, 1), 0.0) for r, e in zip(remaining, inputs[0])]


def _networks(config: Mapping, checkpoints: Mapping[str, str | Path], geometry: WindowGeometry):
    """The trained networks in eval mode; ValueError if one is another method, was built
    with other settings than ``config``'s (``network_identity``) or for other layers."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    networks = {}
    for method, path in checkpoints.items():
        module = load_module(ParticleFlowModule, path, network_identity(config, method))
        built = (module.hparams["method"], [tuple(s) for s in module.hparams["layer_shapes"]])
        if built != (method, geometry.shapes):
            raise ValueError(f"{path}: given as the {method} checkpoint with layers {geometry.shapes}, but it holds "
                             f"a {built[0]} network for layers {built[1]}")
        networks[method] = module.to(device).eval()
    return networks, device


def _fractions(method: str, batch: Mapping, networks: Mapping, device, subtraction) -> list[np.ndarray]:
    """A method's neutral fractions per layer (B, n_eta, n_phi) for a batch."""
    if method == BASELINE:
        return subtraction(batch)

    with torch.no_grad():
        layers = [t.to(device) for t in batch["layers"]]
        return [f.float().cpu().numpy() for f in networks[method](layers, batch["track"].to(device))]


def evaluate_particle_flow(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path],
                           templates: str | Path, output_dir: str | Path) -> list[dict]:
    """Score every method of METHODS on the test file; write metrics.csv/.md (per pi0
    energy bin), distance.csv (per bin of the pions' distance), cell_mse.csv (per layer),
    the figures, and one MLflow run per method. Returns the metrics.csv rows."""
    check_checkpoint_names(checkpoints, LEARNED, "particle_flow evaluate")
    use_evaluation_threads(config)
    output_dir = Path(output_dir)
    geometry = WindowGeometry.from_config(config)
    networks, device = _networks(config, checkpoints, geometry)
    fitted = Templates.load(templates)
    batches = ParticleFlowBatches(test, INFERENCE_BATCH, evaluation=True)
    if batches.shapes != geometry.shapes:
        raise ValueError(f"{test}: images with layers {batches.shapes}, but particle_flow.calorimeter has "
                         f"{geometry.shapes}")

    def subtraction(batch):
        return subtraction_fractions(fitted, batch)

    collected: dict[str, dict[str, list]] = {method: defaultdict(list) for method in METHODS}
    truth: dict[str, list] = defaultdict(list)
    displays = None
    for index in range(len(batches)):
        batch = batches[index]
        energy = [t.numpy() for t in batch["layers"]]
        target = [t.numpy() for t in batch["fraction"]]
        weight = [t.numpy() for t in batch["weight"]]
        events = batch["events"]
        truth["neutral_energy"].append(events["neutral_energy"])
        truth["distance"].append(np.hypot(events["charged_eta"] - events["neutral_eta"],
                                          events["charged_phi"] - events["neutral_phi"]))
        predictions = {}
        for method in METHODS:
            predictions[method] = _fractions(method, batch, networks, device, subtraction)
            for key, value in per_event(geometry, energy, predictions[method], target, weight).items():
                collected[method][key].append(value)
        if displays is None:
            n = min(N_DISPLAYS, len(energy[0]))
            displays = {"energy": [e[:n] for e in energy], "charged": [(1 - t[:n]) * w[:n] for t, w in
                                                                         zip(target, weight)],
                        "neutral": [t[:n] * w[:n] for t, w in zip(target, weight)],
                        "predicted": {m: [f[:n] * e[:n] for f, e in zip(predictions[m], energy)] for m in METHODS},
                        "track_eta": events["track_layer_eta"][:n], "track_phi": events["track_layer_phi"][:n]}
    merged = {method: {key: np.concatenate(values) for key, values in per.items()}
              for method, per in collected.items()}
    for method in METHODS:
        merged[method].update({key: np.concatenate(values) for key, values in truth.items()})

    rows, distance_rows, layer_rows = [], [], []
    for method in METHODS:
        rows += metric_rows(method, merged[method], ENERGY_BINS, "neutral_energy", "GeV", "energy_bin")
        distance_rows += metric_rows(method, merged[method], DISTANCE_BINS, "distance", "rad", "distance_bin")
        for layer, name in enumerate(geometry.names):
            layer_rows.append({"method": method, "layer": name,
                               "cell_mse": weighted_mse(merged[method]["mse_num_layer"][:, layer],
                                                        merged[method]["mse_den_layer"][:, layer])})
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(output_dir / "metrics.csv", COLUMNS, rows)
    write_csv(output_dir / "distance.csv", ("method", "distance_bin", *COLUMNS[2:]), distance_rows)
    write_csv(output_dir / "cell_mse.csv", ("method", "layer", "cell_mse"), layer_rows)
    write_text(output_dir / "metrics.md", markdown_table(rows, "energy_bin", "pi0 energy")
               + "\n" + markdown_table(distance_rows, "distance_bin", "pi+ - pi0 distance"))
    figures = [*plot_responses(merged, ENERGY_BINS, output_dir / "response"),
               *plot_resolution(rows, ENERGY_BINS, output_dir / "resolution")]
    for event in range(len(displays["energy"][0])):
        figures += plot_event_displays(displays, event, geometry, output_dir / f"event_display_{event}")
    _log_runs(config, test, checkpoints, templates, rows, [output_dir / n for n in
                                                           ("metrics.csv", "distance.csv", "cell_mse.csv")])
    log.info("particle flow: %s", json.dumps([r for r in rows if r["energy_bin"] == "all"]))
    return rows


def markdown_table(rows: Sequence[Mapping], column: str, title: str) -> str:
    """A Markdown table of the rows: one line per bin and method, the bin's methods together."""
    lines = [f"| {title} | method | events | response median | resolution (IQR / median) | cell MSE | "
             "position resolution [rad] |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    bins = list(dict.fromkeys(row[column] for row in rows))
    for name in bins:
        for row in (r for r in rows if r[column] == name):
            lines.append(f"| {name} | {row['method']} | {row['n_events']} | {row['response_median']:+.3f} | "
                         f"{row['resolution_iqr']:.3f} | {row['cell_mse']:.4f} | {row['position_resolution']:.4f} |")
    return "\n".join(lines) + "\n"


def _log_runs(config: Mapping, test: str | Path, checkpoints: Mapping[str, str | Path], templates: str | Path,
              rows: Sequence[Mapping], artifacts: Sequence[Path]) -> None:
    """One MLflow run per method: its metrics in every energy bin (``<metric>.<bin>``, the
    ``all`` row without suffix), tagged with the run that trained (or calibrated) it."""
    stage = {key: config[key] for key in ("seed", "particle_flow")}
    for method in METHODS:
        source = templates if method == BASELINE else checkpoints[method]
        tags = run_tags(stage, [test, source], "particle_flow", "evaluate", method)
        if method != BASELINE:
            tags["training.run_id"] = checkpoint_run_id(source)
        metrics = {}
        for row in (r for r in rows if r["method"] == method):
            suffix = "" if row["energy_bin"] == "all" else "." + row["energy_bin"].replace(" ", "")
            metrics.update({f"{key}{suffix}": row[key] for key in COLUMNS[3:]})
        log_run(config, run_name("particle_flow", "evaluate", method), tags, metrics, artifacts, stage=stage)
