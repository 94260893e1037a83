"""Training a learned vertex finder: one Lightning fit, logged to MLflow, outputs as files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import lightning.pytorch as pl

from pipeline.config import derive_seed
from pipeline.studies.vertexing.formats import TRACK_FEATURES


def train_vertex_finder(
    config: Mapping,
    method: str,
    train_path: str | Path,
    val_path: str | Path,
    checkpoint: str | Path,
    history: str | Path,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``method`` (set2graph, track_pair, rnn); write the best checkpoint and the
    per-epoch history CSV. Returns the final validation metrics."""
    from pipeline.ml.tracking import run_name, run_tags
    from pipeline.ml.trainer import fit_and_export
    from pipeline.studies.vertexing.data import TrackGraphDataModule
    from pipeline.studies.vertexing.methods import LEARNED
    from pipeline.studies.vertexing.models import VertexFinder

    if method not in LEARNED:
        raise ValueError(f"unknown learned vertex finder {method!r}; expected one of {LEARNED}")
    settings = config["training"]
    pl.seed_everything(derive_seed(config["seed"], "vertexing", method), workers=True, verbose=False)

    data = TrackGraphDataModule({"train": train_path, "val": val_path}, settings["batch_size"],
                                settings["num_workers"], seed=derive_seed(config["seed"], "vertexing", method, "batches"))
    model = VertexFinder(method, len(TRACK_FEATURES), config["vertexing"]["network"],
                         learning_rate=settings["learning_rate"], threshold=config["vertexing"]["threshold"],
                         lr_schedule=settings["lr_schedule"])
    stage = {key: config[key] for key in ("seed", "vertexing", "training")}
    params = {"method": method, **{f"training.{k}": v for k, v in settings.items()},
              **{f"network.{k}": v for k, v in config["vertexing"]["network"].items()}}
    final, _ = fit_and_export(config, model, data, run_name("vertexing", "train", method),
                              run_tags(stage, [train_path, val_path], "vertexing", "train", method),
                              params, checkpoint, history, progress)
    return final
