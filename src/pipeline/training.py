"""The one Trainer factory of the project, and the MLflow bookkeeping every run shares.

Every model (vertex finders now, image taggers and calorimeter networks later) is trained
by ``build_trainer``: accelerator/devices/precision/epochs from the config's ``training``
section, early stopping on the validation loss, the best checkpoint kept, and an
``MLFlowLogger`` with an explicit tracking URI (Lightning's own fallback, the ./mlruns
file store, raises with MLflow 3). MLflow is a side channel: checkpoints and metrics are
also plain files, so nothing downstream depends on MLflow's state.

Trainings resume: ``fit_and_export`` keeps the epoch checkpoints of a running training in
a ``ResumeState`` directory outside the workflow's outputs, and a training that was killed
continues from its last epoch, to the same result (seeded per-epoch batch orders, the
random streams stored in the checkpoint).
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
from torch.utils.data import Sampler

from pipeline.checkpoints import RUN_ID_KEY, load_checkpoint, save_checkpoint
from pipeline.outputs import atomic_output
from pipeline.tracking import tracking_uri

log = logging.getLogger(__name__)


class PrebatchedDataModule(pl.LightningDataModule):
    """The loaders of a DataModule whose datasets yield whole batches (``self.datasets``
    {split: Dataset}, filled by the subclass's ``setup``): batch_size None, workers kept
    alive between epochs, pinned memory on a GPU; the training batches in the order of
    ``train_sampler`` (each study's own seeded shuffle), the others in file order. The
    subclass sets ``seed`` (the loaders' own random stream, for worker seeds)."""

    num_workers: int = 0
    seed: int = 0

    def train_sampler(self, dataset):
        """The order of the training batches (None: file order)."""
        return None

    def _loader(self, split: str, sampler=None):
        import torch
        from torch.utils.data import DataLoader

        # An own generator for the loader's base seed: left to the global stream, every new
        # iterator would draw from it, and when Lightning makes one differs on resuming.
        return DataLoader(self.datasets[split], batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self):
        return self._loader("train", self.train_sampler(self.datasets["train"]))

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")


class EpochShuffle(Sampler):
    """Batch indices ``0..n-1`` in a new seeded order every epoch: epoch e's order is a
    function of (seed, e) only. Lightning calls ``set_epoch`` before every epoch, so a
    training resumed from a checkpoint repeats the orders of the uninterrupted one.
    Without ``set_epoch`` each iteration is the next epoch. With ``with_epoch`` the items
    are (index, epoch) pairs, for datasets that draw per-epoch noise."""

    def __init__(self, n_batches: int, seed: int, with_epoch: bool = False):
        self.n_batches = n_batches
        self.seed = seed
        self.with_epoch = with_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def order(self, epoch: int) -> list[int]:
        import numpy as np

        return np.random.default_rng([self.seed, epoch]).permutation(self.n_batches).tolist()

    def __iter__(self):
        # A generator: the epoch is read at the first batch, not when the iterator is
        # made; Lightning makes the first one before it calls set_epoch (of the resumed epoch).
        epoch, self.epoch = self.epoch, self.epoch + 1
        for index in self.order(epoch):
            yield (index, epoch) if self.with_epoch else index


class ReplayedRandomOrder(EpochShuffle):
    """The orders of torch's ``RandomSampler(generator=Generator().manual_seed(seed))``
    under Lightning, epoch after epoch (one permutation drawn per epoch: Lightning stops
    at the loader's length, before the sampler draws its second, empty one), but
    recomputed from the seed for any epoch, so that ``set_epoch`` can resume them."""

    def order(self, epoch: int) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch):
            torch.randperm(self.n_batches, generator=generator)
        return torch.randperm(self.n_batches, generator=generator).tolist()


def mlflow_logger(config: Mapping, run_name: str, tags: Mapping[str, str], run_id: str | None = None):
    """An MLFlowLogger on the configured tracking URI and experiment: a new run, or the run
    ``run_id`` continued (a resumed training) when the store still has it."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(config["mlflow"])
    if run_id is not None:
        try:
            MlflowClient(uri).get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s of the interrupted training is not in %s; starting a new run", run_id, uri)
            run_id = None
    return MLFlowLogger(
        experiment_name=config["mlflow"]["experiment"],
        run_name=run_name,
        tracking_uri=uri,
        tags=dict(tags),
        log_model=False,
        run_id=run_id,
    )


def build_trainer(config: Mapping, checkpoint_dir: str | Path, logger=None, progress: bool = True,
                  callbacks: Iterable[pl.Callback] = ()):
    """A Lightning Trainer configured from ``config['training']``.

    Early stopping and checkpointing both watch ``val_loss``; the best checkpoint is
    ``checkpoint_callback.best_model_path``; ``last.ckpt`` in ``checkpoint_dir`` is
    rewritten after every epoch, with the random streams (``RandomStreams``), so that
    a killed training can resume from it.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    settings = config["training"]
    torch.set_num_threads(settings["threads"])
    checkpoint = ModelCheckpoint(
        dirpath=str(checkpoint_dir), filename="best", monitor="val_loss", mode="min", save_top_k=1, save_last=True,
    )
    return pl.Trainer(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        precision=settings["precision"],
        max_epochs=settings["max_epochs"],
        # Lightning runs the ModelCheckpoint last, so the others' states are current in it.
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=settings["patience"]), checkpoint,
                   RandomStreams(), *callbacks],
        logger=logger if logger is not None else False,
        enable_progress_bar=progress,
        log_every_n_steps=10,
    )


class RandomStreams(pl.Callback):
    """Carries the global random streams (torch, CUDA, NumPy, Python) through checkpoints.
    Their state is saved with every checkpoint and, on resuming, set back when training
    starts (after the sanity check, which draws from them too), so the resumed epochs
    draw the dropout masks and loader seeds of the uninterrupted run."""

    def __init__(self):
        self._saved: dict | None = None

    def state_dict(self) -> dict:
        import random

        import numpy as np
        import torch

        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
                "python": random.getstate()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict

    def on_train_start(self, trainer, module) -> None:
        if self._saved is None:
            return
        import random

        import numpy as np
        import torch

        state, self._saved = self._saved, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state["python"])


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
    """Collects the logged metrics at the end of every validation (not the sanity check),
    when the epoch's metrics, those logged in ``on_validation_epoch_end`` too, are in;
    kept in the checkpoints, so a resumed training's history has every epoch."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.rows.append({"epoch": trainer.current_epoch,
                              **{k: float(v) for k, v in trainer.callback_metrics.items()}})

    def state_dict(self) -> dict:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]

    def write(self, path: Path) -> None:
        keys = sorted({k for row in self.rows for k in row} - {"epoch"})
        with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["epoch", *keys])
            writer.writeheader()
            writer.writerows(self.rows)


class ResumeState:
    """The working directory of one training, outside Snakemake's outputs (Snakemake
    deletes the outputs of a job it reruns as incomplete, not this): the Trainer's
    ``checkpoints/last.ckpt`` and ``best.ckpt``, the MLflow run id and a fingerprint of
    what is being trained (config, parameters, input checksums). A rerun of the same
    training resumes from ``last.ckpt``; a rerun of a changed one discards the directory
    and starts over.

    directory: ``<training.resume_dir>/<checkpoint stem>-<hash of its absolute path>``.
    """

    def __init__(self, resume_dir: str | Path, checkpoint: str | Path, fingerprint: str):
        checkpoint = Path(checkpoint).resolve()
        key = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]
        self.directory = Path(resume_dir).resolve() / f"{checkpoint.stem}-{key}"
        self.checkpoints = self.directory / "checkpoints"
        self.fingerprint = fingerprint

    @staticmethod
    def fingerprint_of(config: Mapping, params: Mapping, tags: Mapping[str, str]) -> str:
        """What is trained: the config without its bookkeeping (a new tracking URI does not
        restart a training), the run's parameters, the checksums of its inputs."""
        from pipeline.config import without_bookkeeping

        inputs = {k: v for k, v in tags.items() if k.endswith(".sha256")}
        text = json.dumps({"config": without_bookkeeping(config), "params": params, "inputs": inputs},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, name: str) -> Path:
        return self.directory / name

    def last_checkpoint(self) -> Path | None:
        """``last.ckpt`` of an interrupted run of this same training, else None (a stale
        directory, of another config or other inputs, is removed)."""
        stamp = self._file("fingerprint")
        if stamp.exists() and stamp.read_text() != self.fingerprint:
            log.warning("%s holds an interrupted training of another config or other inputs; starting over",
                        self.directory)
            shutil.rmtree(self.directory)
        last = self.checkpoints / "last.ckpt"
        return last if stamp.exists() and last.exists() else None

    def run_id(self) -> str | None:
        path = self._file("mlflow_run_id")
        return path.read_text().strip() if path.exists() else None

    def start(self, run_id: str) -> None:
        """Record the fingerprint and the MLflow run of this training (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in (("fingerprint", self.fingerprint), ("mlflow_run_id", run_id)):
            with atomic_output(self._file(name)) as tmp:
                Path(tmp).write_text(text)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        try:  # the resume_dir itself too, once no training is left in it
            self.directory.parent.rmdir()
        except OSError:
            pass


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
    written atomically. Returns the last epoch's metrics and the MLflow run id.

    A training that was killed (SIGKILL, a Slurm time limit) resumes from the last
    epoch checkpoint in its ``ResumeState`` directory and continues its MLflow run; the
    directory is removed once the outputs are written."""
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    checkpoint, history = Path(checkpoint), Path(history)
    resume = ResumeState(config["training"]["resume_dir"], checkpoint,
                         ResumeState.fingerprint_of(config, params, tags))
    last = resume.last_checkpoint()
    logger = mlflow_logger(config, run_name=run_name, tags=tags, run_id=resume.run_id() if last else None)
    resume.start(logger.run_id)
    if last is None:
        logger.log_hyperparams({"parameters": sum(p.numel() for p in model.parameters()), **params})
    else:
        log.info("resuming %s from %s (MLflow run %s)", run_name, last, logger.run_id)
    recorder = EpochHistory()
    trainer = build_trainer(config, resume.checkpoints, logger=logger, progress=progress, callbacks=[recorder])
    try:
        trainer.fit(model, datamodule=data, ckpt_path=last, weights_only=True)
    except SIGTERMException:
        # Lightning stops at the next batch and raises a SystemExit that would exit 0.
        log.error("%s stopped by SIGTERM (a Slurm time limit?); run it again to resume from %s",
                  run_name, resume.directory)
        raise SystemExit(128 + signal.SIGTERM) from None

    best = trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"training {run_name} produced no checkpoint in {resume.directory}")
    state = load_checkpoint(best)
    state[RUN_ID_KEY] = logger.run_id
    save_checkpoint(state, checkpoint)
    recorder.write(history)
    logger.experiment.log_artifact(logger.run_id, str(checkpoint), artifact_path="model")
    logger.experiment.log_artifact(logger.run_id, str(history))
    resume.clear()
    final = recorder.rows[-1] if recorder.rows else {}
    log.info("trained %s: best checkpoint %s, last epoch %s", run_name, checkpoint, final)
    return final, logger.run_id

