"""The one Trainer factory of the project, and the MLflow bookkeeping every run shares.

Every model (vertex finders now, image taggers and calorimeter networks later) is trained
by ``build_trainer``: accelerator/devices/precision/epochs from the config's ``training``
section, early stopping on the validation loss, the best checkpoint kept, and an
``MLFlowLogger`` with an explicit tracking URI (Lightning's own fallback, the ./mlruns
file store, raises with MLflow 3). MLflow is a side channel: checkpoints and metrics are
also plain files, so nothing downstream depends on MLflow's state.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import lightning.pytorch as pl

from pipeline import __version__
from pipeline.h5io import git_sha
from pipeline.outputs import atomic_output

log = logging.getLogger(__name__)


class PrebatchedDataModule(pl.LightningDataModule):
    """The loaders of a DataModule whose datasets yield whole batches (``self.datasets``
    {split: Dataset}, filled by the subclass's ``setup``): batch_size None, workers kept
    alive between epochs, pinned memory on a GPU; the training batches in the order of
    ``train_sampler`` (each study's own seeded shuffle), the others in file order."""

    num_workers: int = 0

    def train_sampler(self, dataset):
        """The order of the training batches (None: file order)."""
        return None

    def _loader(self, split: str, sampler=None):
        import torch
        from torch.utils.data import DataLoader

        return DataLoader(self.datasets[split], batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train", self.train_sampler(self.datasets["train"]))

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

#: Key under which the MLflow run id of the training is stored in an exported checkpoint,
#: so that downstream runs (evaluations, the flavour tagger) can name the run they used.
RUN_ID_KEY = "mlflow_run_id"


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
    from another directory), its directory created and the store initialised."""
    uri = mlflow_settings["tracking_uri"]
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(path)
        initialise_sqlite_store(uri, path, mlflow_settings.get("experiment"))
    return uri


def initialise_sqlite_store(uri: str, path: Path, experiment: str | None = None) -> None:
    """Open the SQLite store, and create the experiment, under a file lock. The first
    connection to a new store runs MLflow's schema migrations, and two jobs doing that at
    once (parallel Snakemake jobs on a fresh results/) fail with errors such as "No such
    index"; two jobs creating the same experiment at once collide too."""
    import fcntl

    from mlflow.tracking import MlflowClient

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(uri)
        if experiment and client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)


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


def adam_with_schedule(module: pl.LightningModule, learning_rate: float, schedule: str = "constant"):
    """Adam on a module's parameters, with the learning rate ``constant`` or following a
    ``cosine`` decay to zero over the Trainer's max_epochs (what configure_optimizers returns)."""
    import torch

    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    if schedule == "constant":
        return optimiser
    if schedule == "cosine":
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(module.trainer.max_epochs, 1))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected constant or cosine")


def with_training_overrides(config: Mapping, overrides: Mapping | None) -> dict:
    """The config with some ``training`` settings replaced (a study's own epochs, batch size)."""
    return {**config, "training": {**config["training"], **(overrides or {})}}


class EpochHistory(pl.Callback):
    """Collects the logged metrics at the end of every validation epoch (not the sanity check)."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.rows.append({"epoch": trainer.current_epoch,
                              **{k: float(v) for k, v in trainer.callback_metrics.items()}})

    def write(self, path: Path) -> None:
        keys = sorted({k for row in self.rows for k in row} - {"epoch"})
        with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["epoch", *keys])
            writer.writeheader()
            writer.writerows(self.rows)


def fit_and_export(
    config: Mapping,
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, object],
    checkpoint: str | Path,
    history: str | Path,
    progress: bool = True,
) -> tuple[dict[str, float], str]:
    """Fit ``model`` with the shared Trainer, logged to MLflow; export the best checkpoint
    (with the run id inside, under ``RUN_ID_KEY``) and the per-epoch history CSV, both
    written atomically. Returns the last epoch's metrics and the MLflow run id."""
    import torch

    checkpoint, history = Path(checkpoint), Path(history)
    logger = mlflow_logger(config, run_name=run_name, tags=tags)
    logger.log_hyperparams({"parameters": sum(p.numel() for p in model.parameters()), **params})
    work = checkpoint.parent / f".{checkpoint.stem}-work"
    trainer = build_trainer(config, work, logger=logger, progress=progress)
    recorder = EpochHistory()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=data)

    best = trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"training {run_name} produced no checkpoint in {work}")
    state = torch.load(best, map_location="cpu", weights_only=False)
    state[RUN_ID_KEY] = logger.run_id
    with atomic_output(checkpoint) as tmp:
        torch.save(state, tmp)
    recorder.write(history)
    logger.experiment.log_artifact(logger.run_id, str(checkpoint), artifact_path="model")
    logger.experiment.log_artifact(logger.run_id, str(history))
    shutil.rmtree(work, ignore_errors=True)
    final = recorder.rows[-1] if recorder.rows else {}
    log.info("trained %s: best checkpoint %s, last epoch %s", run_name, checkpoint, final)
    return final, logger.run_id


def checkpoint_run_id(path: str | Path) -> str:
    """The MLflow run id stored in a checkpoint written by ``fit_and_export``."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    if RUN_ID_KEY not in state:
        raise KeyError(f"{path}: no {RUN_ID_KEY!r} in the checkpoint; was it written by `pipeline train-*`?")
    return str(state[RUN_ID_KEY])
