"""Scoring every super-resolution method on the same test events: the tables, the figures
and the MLflow runs ``super_resolution.evaluate.<method>``.

Two test files, each streamed once in batches through every method (``interpolation``'s
and the trained networks), only per-event numbers kept, so memory stays flat:

* the study's sample (pi+ pi0): the image metrics per layer against the fine truth
  (``metrics.ImageMetrics``) and the shower shapes per layer (``physics.shower_shapes``:
  energy barycentre and width, against the fine truth's; the neutral-energy barycentre, of
  the image times each detector cell's true neutral fraction, against the true neutral
  deposits'); the detector's own cells (``coarse``) beside the methods;
* the pi0 sample: the two-photon split of the physics layer (``physics.two_cluster_split``)
  of the fine truth, of the detector's coarse image on its own cells, and of every method:
  the fraction of resolved pairs, the diphoton mass, the photons' separation.
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
from pipeline.studies.particle_flow.evaluate import markdown_table as particle_flow_table
from pipeline.studies.particle_flow.figures import plot_resolution
from pipeline.studies.particle_flow.metrics import ENERGY_BINS
from pipeline.studies.super_resolution.data import SuperResolutionDataset
from pipeline.studies.super_resolution.detector import detector_config
from pipeline.studies.super_resolution.downstream import (
    COLUMNS,
    downstream_rows,
    particle_flow_network,
    particle_flow_reference,
)
from pipeline.studies.super_resolution.figures import plot_event_display, plot_masses, plot_psnr
from pipeline.studies.super_resolution.interpolation import super_resolve
from pipeline.studies.super_resolution.methods import INTERPOLATIONS, LEARNED, METHODS, REFERENCES
from pipeline.studies.super_resolution.metrics import ImageMetrics, physics_row
from pipeline.studies.super_resolution.models import SuperResolutionModule
from pipeline.studies.super_resolution.physics import diphoton_mass, neutral_fractions, shower_shapes, two_cluster_split
from pipeline.studies.super_resolution.train import network_identity

log = logging.getLogger(__name__)

#: Events per inference batch.
INFERENCE_BATCH = 128
#: Half-width [rad] of the event displays around the window's centre: a pion's showers
#: (pflow) and a pi0's photon pair (at most ~0.1 apart at 7 GeV).
DISPLAY_HALF_WIDTH = {"pflow": 0.2, "pi0": 0.12}
METRIC_COLUMNS = ("method", "layer", "mse", "psnr", "ssim", "energy_closure", "energy_bias")
PHYSICS_COLUMNS = ("method", "n_events", "resolved_fraction", "mass_n", "mass_peak", "mass_width",
                   "separation_residual_median", "separation_residual_iqr")
SHAPE_COLUMNS = ("method", "layer", "barycentre_resolution", "neutral_barycentre_resolution", "width_ratio",
                 "width_ratio_spread")
#: Shower shapes count the cells within this distance [rad] of the fine truth's barycentre:
#: about twice the EM showers' halo (1.2 Moliere radii, 0.028 at 1.5 m) and the hadronic
#: showers' (0.12), so the readout's noise cells elsewhere in the window do not widen them.
SHAPE_RADIUS = {"em": 0.06, "had": 0.2}


def _networks(config: Mapping, checkpoints: Mapping[str, str | Path], shapes: list[tuple[int, int]]):
    """The trained networks in eval mode; ValueError if one is another method (another
    study's too), was built with other settings than ``config``'s (``network_identity``)
    or for other layers."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    networks = {}
    for method, path in checkpoints.items():
        module = load_module(SuperResolutionModule, path, network_identity(config, method))
        built = (module.hparams["method"], [tuple(s) for s in module.hparams["layer_shapes"]])
        if built != (method, shapes):
            raise ValueError(f"{path}: given as the {method} checkpoint for layers {shapes}, but it holds "
                             f"a {built[0]} network for layers {built[1]}")
        networks[method] = module.to(device).eval()
    return networks, device


def super_resolved(batch: Mapping, factors: Sequence[tuple[int, int]], networks: Mapping, device) -> dict:
    """{method: (B, n_layers, F, F) float32 numpy [GeV]} of every method on a batch (tensors)."""
    out = {}
    with torch.no_grad():
        for method in INTERPOLATIONS:
            out[method] = super_resolve(method, batch["coarse"], factors)
        coarse = [t.to(device) for t in batch["coarse"]]
        for method in LEARNED:
            out[method] = networks[method](coarse, batch["track"].to(device)).float().cpu()
    return out


def _check_geometry(batches, path: Path, shapes) -> None:
    if batches.shapes != shapes:
        raise ValueError(f"{path}: images with layers {batches.shapes}, but the networks were trained on {shapes}")


def evaluate_super_resolution(config: Mapping, test: str | Path, pi0_test: str | Path,
                              checkpoints: Mapping[str, str | Path], output_dir: str | Path,
                              particle_flow: Mapping[str, str | Path] | None = None) -> dict[str, list]:
    """Score every method of METHODS; write metrics.csv/.md (image metrics per method and
    layer, on ``test``), shower_shapes.csv/.md (on ``test``), physics.csv/.md (photon pairs
    and diphoton mass on ``pi0_test``, beside the fine truth and the coarse input), the
    figures, and one MLflow run per method. With ``particle_flow`` ({"checkpoint": the
    particle-flow study's cnn, "metrics": its metrics.csv}) also downstream.csv/.md and
    downstream_resolution.png/pdf: that CNN fed every method's images (``downstream``).
    Returns the tables' rows."""
    check_checkpoint_names(checkpoints, LEARNED, "super_resolution evaluate")
    use_evaluation_threads(config)
    output_dir = Path(output_dir)
    geometry = WindowGeometry.from_config(detector_config(config))
    physics_layer = geometry.names.index(config["super_resolution"]["physics"]["layer"])
    networks, device = _networks(config, checkpoints, geometry.shapes)
    pf_geometry = WindowGeometry.from_config(config)
    if particle_flow is not None:
        pf_network = particle_flow_network(config, particle_flow["checkpoint"], pf_geometry.shapes, device)
    images = SuperResolutionDataset(test, INFERENCE_BATCH, evaluation=True)
    pi0 = SuperResolutionDataset(pi0_test, INFERENCE_BATCH, evaluation=True)
    for batches, path in ((images, Path(test)), (pi0, Path(pi0_test))):
        _check_geometry(batches, path, geometry.shapes)

    metric_rows, shape_rows, displays = _image_metrics(images, geometry, networks, device)
    physics_rows, masses, pi0_display = _photon_pairs(pi0, geometry, physics_layer,
                                                      config["super_resolution"]["physics"]["min_fraction"],
                                                      networks, device)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(output_dir / "metrics.csv", METRIC_COLUMNS, metric_rows)
    write_csv(output_dir / "physics.csv", PHYSICS_COLUMNS, physics_rows)
    write_csv(output_dir / "shower_shapes.csv", SHAPE_COLUMNS, shape_rows)
    write_text(output_dir / "metrics.md", markdown_table(metric_rows, METRIC_COLUMNS))
    write_text(output_dir / "physics.md", markdown_table(physics_rows, PHYSICS_COLUMNS))
    write_text(output_dir / "shower_shapes.md", markdown_table(shape_rows, SHAPE_COLUMNS))
    _figures(output_dir, metric_rows, masses, [displays, pi0_display], geometry)
    tables = {"metrics": metric_rows, "physics": physics_rows, "shower_shapes": shape_rows}
    if particle_flow is not None:
        tables["downstream"] = _downstream(images, geometry, pf_geometry, pf_network, particle_flow["metrics"],
                                           networks, device, output_dir)
    _log_runs(config, [test, pi0_test], checkpoints, metric_rows, physics_rows,
              [output_dir / f"{n}.csv" for n in tables])
    log.info("super-resolution physics: %s", json.dumps(physics_rows))
    return tables


def _downstream(batches, geometry, pf_geometry, pf_network, pf_metrics: str | Path, networks, device,
                output_dir: Path) -> list[dict]:
    """downstream.csv/.md and downstream_resolution.png/pdf: the particle-flow CNN on every method's images."""
    factors = [geometry.factors(layer) for layer in range(geometry.n_layers)]
    rows = downstream_rows(batches, factors, pf_network, pf_geometry,
                           lambda batch: super_resolved(batch, factors, networks, device), device, METHODS)
    rows += particle_flow_reference(pf_metrics)
    write_csv(output_dir / "downstream.csv", COLUMNS, rows)
    write_text(output_dir / "downstream.md", particle_flow_table(rows, "energy_bin", "pi0 energy"))
    plot_resolution(rows, ENERGY_BINS, output_dir / "downstream_resolution")
    return rows


def _image_metrics(batches, geometry, networks, device) -> tuple[list, list, dict]:
    """The metrics.csv and shower_shapes.csv rows of every method on a file, and the first event's display."""
    accumulators = {method: ImageMetrics(geometry.n_layers, geometry.names) for method in METHODS}
    # Per event and layer: barycentre distance to the fine truth's, width over the fine truth's.
    shapes: dict[str, dict[str, list]] = {m: defaultdict(list) for m in ("coarse", *METHODS)}
    factors = [geometry.factors(layer) for layer in range(geometry.n_layers)]
    display = None
    for index in range(len(batches)):
        batch = batches[index]
        fine = batch["fine"]
        predictions = super_resolved(batch, factors, networks, device)
        truth_shapes = []
        for layer, item in enumerate(geometry.layers):
            everything = shower_shapes(fine[:, layer].numpy(), geometry.window)
            centre = (everything["eta"], everything["phi"])
            truth_shapes.append({**shower_shapes(fine[:, layer].numpy(), geometry.window, centre,
                                                 SHAPE_RADIUS[item.kind]), "centre": centre})
            neutral = shower_shapes(batch["fine_neutral"][:, layer], geometry.window)
            neutral = shower_shapes(batch["fine_neutral"][:, layer], geometry.window, (neutral["eta"], neutral["phi"]),
                                    SHAPE_RADIUS[item.kind])
            truth_shapes[-1]["neutral"] = neutral
            truth_shapes[-1]["fractions"] = neutral_fractions(batch["fine_neutral"][:, layer],
                                                              batch["fine_charged"][:, layer], factors[layer])
        images = {"coarse": [c.numpy() for c in batch["coarse"]],
                  **{m: [p[:, layer].numpy() for layer in range(geometry.n_layers)] for m, p in predictions.items()}}
        for method, layers in images.items():
            if method in predictions:
                accumulators[method].update(predictions[method], fine, batch["coarse"], factors)
            for layer, image in enumerate(layers):
                truth = truth_shapes[layer]
                radius = SHAPE_RADIUS[geometry.layers[layer].kind]
                mine = shower_shapes(image, geometry.window, truth["centre"], radius)
                shapes[method]["distance"].append(np.hypot(mine["eta"] - truth["eta"], mine["phi"] - truth["phi"]))
                fe, fp = (1, 1) if method == "coarse" else factors[layer]
                fractions = truth["fractions"].repeat(fe, axis=1).repeat(fp, axis=2)
                reference = truth["neutral"]
                neutral = shower_shapes(image * fractions, geometry.window, (reference["eta"], reference["phi"]), radius)
                shapes[method]["neutral_distance"].append(np.hypot(neutral["eta"] - reference["eta"],
                                                                   neutral["phi"] - reference["phi"]))
                shapes[method]["ratio"].append(mine["width"] / truth["width"])
                shapes[method]["layer"].append(np.full(len(image), layer))
        if display is None:
            display = {"coarse": [c[0].numpy() for c in batch["coarse"]],
                       **{m: [p[0, layer].numpy() for layer in range(geometry.n_layers)]
                          for m, p in predictions.items()},
                       "fine": [fine[0, layer].numpy() for layer in range(geometry.n_layers)],
                       "title": "pi+ pi0 test event 0", "half_width": DISPLAY_HALF_WIDTH["pflow"]}
    metric_rows = [{"method": method, **values} for method in METHODS for values in accumulators[method].per_layer()]
    shape_rows = []
    for method, per in shapes.items():
        distance, neutral, ratio, layer_of = (np.concatenate(per[key])
                                              for key in ("distance", "neutral_distance", "ratio", "layer"))
        for layer, name in enumerate(geometry.names):
            sel = layer_of == layer
            d, r = distance[sel][np.isfinite(distance[sel])], ratio[sel][np.isfinite(ratio[sel])]
            dn = neutral[sel][np.isfinite(neutral[sel])]
            q25, q50, q75 = np.percentile(r, [25, 50, 75]) if len(r) else (np.nan,) * 3
            shape_rows.append({"method": method, "layer": name,
                               "barycentre_resolution": float(np.percentile(d, 68)) if len(d) else np.nan,
                               "neutral_barycentre_resolution": float(np.percentile(dn, 68)) if len(dn) else np.nan,
                               "width_ratio": float(q50), "width_ratio_spread": float((q75 - q25) / 1.349)})
    return metric_rows, shape_rows, display


def _photon_pairs(batches, geometry, physics_layer: int, min_fraction: float, networks, device) -> tuple:
    """The physics.csv rows (fine truth, coarse input, every method) on the pi0 file, the
    masses of each row's resolved events and the first event's display."""
    em = [layer for layer, item in enumerate(geometry.layers) if item.kind == "em"]
    factors = [geometry.factors(layer) for layer in range(geometry.n_layers)]
    collected: dict[str, dict[str, list]] = {name: defaultdict(list) for name in (*REFERENCES, *METHODS)}
    display = None
    for index in range(len(batches)):
        batch = batches[index]
        events = batch["events"]
        predictions = super_resolved(batch, factors, networks, device)
        images = {"fine": batch["fine"][:, physics_layer].numpy(), "coarse": batch["coarse"][physics_layer].numpy(),
                  **{m: p[:, physics_layer].numpy() for m, p in predictions.items()}}
        # The photons' energies: the EM layers' measured energy shared as the split shares
        # the physics layer's: the same total for every row, so the mass compares the splits.
        em_energy = sum(batch["coarse"][layer].numpy().reshape(len(events["window_eta"]), -1).sum(axis=1)
                        for layer in em)
        for name, image in images.items():
            split = two_cluster_split(image, geometry.window, min_fraction)
            share = split["e1"] + split["e2"]
            with np.errstate(invalid="ignore", divide="ignore"):
                e1, e2 = em_energy * split["e1"] / share, em_energy * split["e2"] / share
            mass = diphoton_mass(e1, e2, split["eta1"], split["phi1"], split["eta2"], split["phi2"],
                                 events["window_eta"], events["window_phi"])
            collected[name]["resolved"].append(split["resolved"])
            collected[name]["mass"].append(mass)
            collected[name]["separation"].append(split["separation"])
        if display is None:
            display = {"coarse": [c[0].numpy() for c in batch["coarse"]],
                       **{m: [p[0, layer].numpy() for layer in range(geometry.n_layers)]
                          for m, p in predictions.items()},
                       "fine": [batch["fine"][0, layer].numpy() for layer in range(geometry.n_layers)],
                       "title": "pi0 test event 0", "half_width": DISPLAY_HALF_WIDTH["pi0"]}
    merged = {name: {key: np.concatenate(values) for key, values in per.items()} for name, per in collected.items()}
    rows = [{"method": name, **physics_row(per, truth=merged["fine"])} for name, per in merged.items()]
    # The masses of the events each row resolves into two photons, as the table's.
    return rows, {name: per["mass"][per["resolved"]] for name, per in merged.items()}, display


def _figures(output_dir: Path, metric_rows, masses, displays, geometry) -> list[Path]:
    figures = [*plot_psnr(metric_rows, geometry.names, output_dir / "psnr"), *plot_masses(masses, output_dir / "mass")]
    for index, display in enumerate(displays):
        rows = {name: display[name] for name in ("coarse", *METHODS, "fine")}
        figures += plot_event_display(rows, geometry.names, geometry.window, display["half_width"], display["title"],
                                      output_dir / f"event_display_{index}")
    return figures


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4g}"


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """A Markdown table of the rows, one line each, the columns in order."""
    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(columns))) + " |"]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _log_runs(config: Mapping, tests: Sequence[str | Path], checkpoints: Mapping[str, str | Path],
              metric_rows: Sequence[Mapping], physics_rows: Sequence[Mapping], artifacts: Sequence[Path]) -> None:
    """One MLflow run per method: its image metrics per layer (``<metric>.<layer>``) and
    its physics row, a network's tagged with the run that trained it."""
    stage = {key: config[key] for key in ("seed", "super_resolution")}
    for method in METHODS:
        sources = [*tests, checkpoints[method]] if method in LEARNED else list(tests)
        tags = run_tags(stage, sources, "super_resolution", "evaluate", method)
        if method in LEARNED:
            tags["training.run_id"] = checkpoint_run_id(checkpoints[method])
        metrics = {f"{key}.{row['layer']}": row[key] for row in metric_rows if row["method"] == method
                   for key in METRIC_COLUMNS[2:] if np.isfinite(row[key])}
        physics = next(row for row in physics_rows if row["method"] == method)
        metrics.update({key: physics[key] for key in PHYSICS_COLUMNS[1:] if np.isfinite(physics[key])})
        log_run(config, run_name("super_resolution", "evaluate", method), tags, metrics, artifacts, stage=stage)
