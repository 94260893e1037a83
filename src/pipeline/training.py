"""The one Trainer factory of the project, and the MLflow bookkeeping every run shares.

Every model (vertex finders now, image taggers and calorimeter networks later) is trained
by ``build_trainer``: accelerator/devices/precision/epochs from the config's ``training``
section, early stopping on the validation loss, the best checkpoint kept, and an
``MLFlowLogger`` with an explicit tracking URI (Lightning's own fallback, the ./mlruns
file store, raises with MLflow 3). MLflow is a side channel: checkpoints and metrics are
also plain files, so nothing downstream depends on MLflow's state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from pipeline import __version__
from pipeline.h5io import git_sha


def file_checksum(path: str | Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def run_tags(config: Mapping, inputs: Iterable[str | Path]) -> dict[str, str]:
    """Tags every MLflow run carries: package version, git SHA, input-file checksums."""
    tags = {"pipeline.version": __version__, "pipeline.git_sha": git_sha() or "unknown"}
    for path in inputs:
        tags[f"input.{Path(path).name}.sha256"] = file_checksum(path)
        tags[f"input.{Path(path).name}.path"] = str(path)
    tags["config.json"] = json.dumps(config, sort_keys=True)[:5000]
    return tags


def tracking_uri(mlflow_settings: Mapping) -> str:
    """The configured tracking URI; a relative SQLite path is made absolute (jobs may run
    from another directory), and its directory is created."""
    uri = mlflow_settings["tracking_uri"]
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(path)
    return uri


def mlflow_logger(config: Mapping, run_name: str, tags: Mapping[str, str]):
    """An MLFlowLogger on the configured tracking URI and experiment."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=config["mlflow"]["experiment"],
        run_name=run_name,
        tracking_uri=tracking_uri(config["mlflow"]),
        tags=dict(tags),
        log_model=False,
    )


def build_trainer(config: Mapping, checkpoint_dir: str | Path, logger=None, progress: bool = True):
    """A Lightning Trainer configured from ``config['training']``.

    Early stopping and checkpointing both watch ``val_loss``; the best checkpoint is
    ``checkpoint_callback.best_model_path``.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    settings = config["training"]
    torch.set_num_threads(settings["threads"])
    checkpoint = ModelCheckpoint(
        dirpath=str(checkpoint_dir), filename="best", monitor="val_loss", mode="min", save_top_k=1,
    )
    return pl.Trainer(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        precision=settings["precision"],
        max_epochs=settings["max_epochs"],
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=settings["patience"]), checkpoint],
        logger=logger if logger is not None else False,
        enable_progress_bar=progress,
        log_every_n_steps=10,
    )
