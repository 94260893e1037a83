"""Measuring the parametrised baseline's templates on the calibration sample (single
charged pions, ``particle_flow.calibration``), streamed: the template sums of each batch
of events are added up (``parametrised.template_statistics``), so memory stays flat
however large the sample. Logged to MLflow as ``particle_flow.calibrate.parametrised``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.batches import ImageBatches
from pipeline.studies.particle_flow.cell_matching import ATLAS_RING_WIDTHS, CellGeometry
from pipeline.studies.particle_flow.methods import BASELINE
from pipeline.studies.particle_flow.templates import (
    MIN_BIN_ENTRIES,
    P_BINS,
    template_statistics,
    templates_from_statistics,
)

log = logging.getLogger(__name__)

#: Calibration events per batch.
EVENTS_PER_BATCH = 512


def baseline_inputs(batch: Mapping) -> tuple:
    """(energy, labels, track_p, track_eta, track_phi) of an evaluation batch
    (``batches.ImageBatches(..., evaluation=True)``, arrays or tensors), as the baseline takes them."""
    events = batch["events"]
    track_p = np.where(events["has_track"] == 1, events["track_p"], np.nan)
    return ([np.asarray(image) for image in batch["layers"]], batch["cluster"], track_p, events["track_layer_eta"],
            events["track_layer_phi"])


def calibrate(config: Mapping, inputs: Sequence[str | Path], output: str | Path, progress: bool = True):
    """Fit the templates on the calibration sample's particle_flow_images files and write
    them (JSON) to ``output``; returns the Templates."""
    geometry = CellGeometry.from_window_geometry(WindowGeometry.from_config(config), ATLAS_RING_WIDTHS)
    totals = None
    n_events = 0
    for path in inputs:
        batches = ImageBatches(path, EVENTS_PER_BATCH, evaluation=True)
        if list(batches.shapes) != list(geometry.layer_shapes):
            raise ValueError(f"{path}: images with layers {batches.shapes}, but particle_flow.calorimeter has "
                             f"{list(geometry.layer_shapes)}")
        for index in tqdm(range(len(batches)), desc=f"calibrate {Path(path).name}", disable=not progress):
            batch = batches[index]
            if np.any(batch["events"]["neutral_energy"] > 0):
                raise ValueError(f"{path}: events with a neutral gun particle; the calibration sample "
                                 f"(particle_flow.calibration) must hold single charged pions")
            stats = template_statistics(*baseline_inputs(batch), geometry, P_BINS)
            totals = stats if totals is None else [a + b for a, b in zip(totals, stats)]
            n_events += len(batch["row"])
    if totals is None:
        raise ValueError("particle_flow calibrate: no calibration files given")
    templates = templates_from_statistics(totals, geometry, P_BINS, MIN_BIN_ENTRIES)
    templates.save(output)
    stage = {key: config[key] for key in ("seed", "particle_flow")}
    metrics = {"inclusive_mean": templates.inclusive_mean, "inclusive_sigma": templates.inclusive_sigma,
               "events": float(n_events), "matched_events": float(templates.counts.sum())}
    log_run(config, run_name("particle_flow", "calibrate", BASELINE),
            run_tags(stage, list(inputs), "particle_flow", "calibrate", BASELINE), metrics, [output], stage=stage)
    log.info("templates from %d events (%d matched): <E/p> = %.3f +- %.3f", n_events, templates.counts.sum(),
             templates.inclusive_mean, templates.inclusive_sigma)
    return templates
