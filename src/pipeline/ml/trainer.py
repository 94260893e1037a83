"""The one Trainer factory of the project and its callbacks.

Every model is trained by ``fit_and_export`` through ``build_trainer``:
accelerator/devices/precision/epochs from the config's ``training`` section, early
stopping on the validation loss, the best checkpoint kept, and an ``MLFlowLogger``
(``pipeline.ml.tracking``). Trainings resume: the epoch checkpoints of a running training
live in a ``ResumeState`` directory (``pipeline.ml.resume``) outside the workflow's
outputs, and a training that was killed continues from its last epoch, to the same result
(seeded per-epoch batch orders, the random streams stored in the checkpoint). With
``training.devices`` x ``training.num_nodes`` > 1 the same fit runs data-parallel
(``pipeline.ml.parallel``): every rank runs this code, rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
import signal
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.allocator import retain_freed_memory
from pipeline.io.outputs import atomic_output
from pipeline.ml.checkpoints import IDENTITY_KEY, RUN_ID_KEY, checkpoint_identity, load_checkpoint, save_checkpoint
from pipeline.ml.memory_format import channels_last
from pipeline.ml.parallel import build_strategy, check_launch, follow_launcher, process_rank, world_size
from pipeline.ml.resume import ResumeState
from pipeline.ml.threads import use_threads
from pipeline.ml.tracking import mlflow_logger, run_name, run_tags, tracking_server_lost
from pipeline.seeds import derive_seed

log = logging.getLogger(__name__)


def use_deterministic_kernels(settings: Mapping) -> None:
    """Before CUDA starts (``train_method``, before the data and the network are built):
    cuBLAS takes its workspace setting when it first runs, and with ``training.deterministic``
    it needs a fixed one for reproducible sums (docs/determinism.md); the Trainer then turns
    on torch's deterministic algorithms (and sets the same variable, later)."""
    if settings["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def process_flags_kept():
    """Torch's process-wide flags as they were before, once the block ends: the Trainer of
    ``training.deterministic`` turns on deterministic algorithms for the whole process, and
    a process that trains and then goes on (an evaluation, the tests) keeps its own choice."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def build_trainer(config: Mapping, checkpoint_dir: str | Path, logger=None, progress: bool = True,
                  callbacks: Iterable[pl.Callback] = ()):
    """A Lightning Trainer configured from ``config['training']``.

    Early stopping and checkpointing both watch ``val_loss`` (reduced over the ranks of a
    data-parallel training); the best checkpoint is ``checkpoint_callback.best_model_path``;
    ``last.ckpt`` in ``checkpoint_dir`` is rewritten after every epoch, with the random
    streams (``RandomStreams``), so that a killed training can resume from it. The batches
    are shared out by the DataModules themselves (``PrebatchedDataModule``), not by Lightning.
    """
    settings = config["training"]
    use_threads(settings["threads"])
    if world_size(settings) > 1:  # Lightning's launcher sets every rank's threads from the cores unless this is set
        os.environ["OMP_NUM_THREADS"] = str(settings["threads"])
    retain_freed_memory()
    checkpoint = ModelCheckpoint(
        dirpath=str(checkpoint_dir), filename="best", monitor="val_loss", mode="min", save_top_k=1, save_last=True,
    )
    return pl.Trainer(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        num_nodes=settings["num_nodes"],
        strategy=build_strategy(settings),
        use_distributed_sampler=False,
        precision=settings["precision"],
        accumulate_grad_batches=settings["accumulate_batches"],
        deterministic=settings["deterministic"],
        max_epochs=settings["max_epochs"],
        # Lightning runs the ModelCheckpoint last, so the others' states are current in it.
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=settings["patience"]), checkpoint,
                   RandomStreams(), *callbacks],
        logger=logger if logger is not None else False,
        enable_progress_bar=progress,
        log_every_n_steps=10,
    )


def _random_state() -> dict:
    """This process's global random streams (torch, CUDA, NumPy, Python), as plain data."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate()}


class RandomStreams(pl.Callback):
    """Carries the global random streams (torch, CUDA, NumPy, Python) of every rank through
    checkpoints. Their states are saved with every checkpoint and, on resuming, set back
    when training starts (after the sanity check, which draws from them too), so the
    resumed epochs draw the dropout masks and loader seeds of the uninterrupted run.

    The ranks of a data-parallel training are seeded alike (the same initial weights);
    when the fit starts, every rank but 0 reseeds from ``derive_seed(training seed, "rank",
    rank)`` (the training seed: torch's, which ``train_method`` set), so that the ranks draw
    their own dropout masks, not copies of rank 0's."""

    def __init__(self):
        self._saved: list[dict] | None = None

    def setup(self, trainer, module, stage: str) -> None:
        if trainer.global_rank > 0:
            seed = derive_seed(torch.initial_seed(), "rank", trainer.global_rank)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def state_dict(self) -> dict:
        # Lightning asks every rank when it saves a checkpoint (rank 0 writes it): all take part.
        states = [_random_state()]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, _random_state())
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict["ranks"]

    def on_train_start(self, trainer, module) -> None:
        if self._saved is None:
            return

        states, self._saved = self._saved, None
        if len(states) != trainer.world_size:
            raise RuntimeError(f"the checkpoint holds the random streams of {len(states)} processes, this training "
                               f"has {trainer.world_size}")
        state = states[trainer.global_rank]
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state["python"])


def adam_with_schedule(module: pl.LightningModule, learning_rate: float, schedule: str = "constant"):
    """Adam on a module's parameters, with the learning rate ``constant`` or following a
    ``cosine`` decay to zero over the Trainer's max_epochs (what configure_optimizers returns)."""
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    if schedule == "constant":
        return optimiser
    if schedule == "cosine":
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(module.trainer.max_epochs, 1))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected constant or cosine")


class ExitOnSigterm(pl.Callback):
    """A data-parallel rank that gets SIGTERM (a Slurm time limit, a stopped workflow) exits
    at once with 128 + 15, saying ``message`` (what resumes it): the epoch under way is lost,
    the training resumes from the last one. Lightning's own SIGTERM handler broadcasts from
    inside the signal handler, which deadlocks ranks that are in another collective (two gloo
    ranks hung until killed). Set once the fit has started, over Lightning's handler."""

    def __init__(self, message: str):
        self.message = message

    def on_train_start(self, trainer, module) -> None:
        signal.signal(signal.SIGTERM, self._exit)

    def _exit(self, signum, frame) -> None:
        # os.write, not logging: a signal handler may interrupt a logging call holding its lock.
        os.write(2, f"{self.message}\n".encode())
        os._exit(128 + signum)


def study_training_config(config: Mapping, study: str) -> dict:
    """The config whose ``training`` section has the study's own overrides
    (``config[study]["training"]``: its epochs, batch size...) applied; a study without
    that section trains with the shared one. ``config`` itself is left as it is."""
    return {**config, "training": {**config["training"], **config[study].get("training", {})}}


class EpochHistory(pl.Callback):
    """Collects the logged metrics at the end of every validation (not the sanity check),
    when the epoch's metrics, those logged in ``on_validation_epoch_end`` too, are in;
    kept in the checkpoints, so a resumed training's history has every epoch."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer, module):
        # Every rank keeps them (the metrics are reduced over the ranks); rank 0 writes them.
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
    *,
    identity: Mapping,
) -> tuple[dict[str, float], str]:
    """Fit ``model`` with the shared Trainer, logged to MLflow; export the best checkpoint
    (with the run id inside, under ``RUN_ID_KEY``, and ``identity``, what it is
    (``checkpoint_identity``), under ``IDENTITY_KEY``) and the per-epoch history CSV, both
    written atomically. Returns the last epoch's metrics and the MLflow run id.

    A training that was killed (SIGKILL, a Slurm time limit) resumes from the last
    epoch checkpoint in its ``ResumeState`` directory and continues its MLflow run; the
    directory is removed once the outputs are written.

    Data-parallel, every rank runs this; rank 0 alone keeps the MLflow run and the resume
    directory and writes the outputs; the others return (their last epoch's metrics, None)."""
    checkpoint, history = Path(checkpoint), Path(history)
    settings = config["training"]
    rank, world = process_rank(settings["launcher"]), world_size(settings)
    main = rank == 0
    resume = ResumeState(settings["resume_dir"], checkpoint, ResumeState.fingerprint_of(config, params, tags))
    last = resume.last_checkpoint(discard_stale=main)
    logger = None
    if main:
        logger = mlflow_logger(config, run_name=run_name, tags=tags, run_id=resume.run_id() if last else None)
        resume.start(logger.run_id)
        if last is None:
            logger.log_hyperparams({"parameters": sum(p.numel() for p in model.parameters()), **params})
        else:
            log.info("resuming %s from %s (MLflow run %s)", run_name, last, logger.run_id)
    if world > 1:
        log.info("%s: process %d of %d (data-parallel)", run_name, rank, world)
    recorder = EpochHistory()
    stopped = f"{run_name} stopped by SIGTERM (a Slurm time limit?); run it again to resume from {resume.directory}"
    callbacks = [recorder, *([ExitOnSigterm(f"process {rank} of {world}: {stopped}")] if world > 1 else [])]
    try:
        with process_flags_kept():
            trainer = build_trainer(config, resume.checkpoints, logger=logger, progress=progress, callbacks=callbacks)
            trainer.fit(channels_last(model), datamodule=data, ckpt_path=last, weights_only=True)
    except SIGTERMException:
        # Lightning stops at the next batch and raises a SystemExit that would exit 0.
        log.error(stopped)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        # A tracking server gone mid-training: one line naming it, not MLflow's chained retries.
        lost = tracking_server_lost(config, error, run_name, resume.checkpoints / "last.ckpt")
        if lost is None:
            raise
        raise lost from None

    final = recorder.rows[-1] if recorder.rows else {}
    if not main:
        return final, None
    best = trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"training {run_name} produced no checkpoint in {resume.directory}")
    state = load_checkpoint(best)
    state[RUN_ID_KEY] = logger.run_id
    state[IDENTITY_KEY] = dict(identity)
    save_checkpoint(state, checkpoint)
    recorder.write(history)
    logger.experiment.log_artifact(logger.run_id, str(checkpoint), artifact_path="model")
    logger.experiment.log_artifact(logger.run_id, str(history))
    resume.clear()
    log.info("trained %s: best checkpoint %s, last epoch %s", run_name, checkpoint, final)
    return final, logger.run_id


def train_method(
    config: Mapping,
    study: str,
    method: str,
    data: Callable[[Mapping], pl.LightningDataModule],
    model: Callable[[Mapping], pl.LightningModule],
    inputs: Sequence[str | Path],
    sections: Sequence[str],
    params: Mapping[str, object],
    checkpoint: str | Path,
    history: str | Path,
    progress: bool = True,
    tags: Mapping[str, str] | None = None,
    seed: int | None = None,
    *,
    network: Mapping,
    recorded: Mapping | None = None,
    logged_as: str | None = None,
) -> dict[str, float]:
    """Train ``method`` of ``study``, every study's recipe: the config with the study's
    training overrides (``study_training_config``); the global random streams seeded with
    ``seed`` (default derive_seed(config seed, study, method)), then ``data(config)`` and
    ``model(config)`` built from that config, so their initial draws follow the seed; fitted
    and exported by ``fit_and_export`` as the MLflow run ``<study>.train.<method>`` (``logged_as``
    in place of ``<study>``, in the name and the tags: another study training this study's
    network, such as the learning curves), whose
    tags are ``run_tags`` of ``inputs`` and of the config's seed, ``sections`` and training,
    then ``tags``, and whose params the method, every training setting and ``params``.
    The checkpoint records ``checkpoint_identity(study, method, network, **recorded)``:
    ``network`` the config's settings the model is built with (what the study's evaluation
    computes from its config and compares), ``recorded`` what else it is specific to.
    Returns the last epoch's metrics.

    Data-parallel (``training.devices`` x ``num_nodes`` > 1), every rank runs this whole
    function: the same seed, the same data and initial weights (``fit_and_export``)."""
    config = study_training_config(config, study)
    check_launch(config["training"])
    follow_launcher()
    use_deterministic_kernels(config["training"])
    pl.seed_everything(derive_seed(config["seed"], study, method) if seed is None else seed,
                       workers=True, verbose=False)
    datamodule, module = data(config), model(config)
    stage = {key: config[key] for key in ("seed", *sections, "training")}
    final, _ = fit_and_export(
        config, module, datamodule, run_name(logged_as or study, "train", method),
        {**run_tags(stage, inputs, logged_as or study, "train", method), **(tags or {})},
        {"method": method, **{f"training.{k}": v for k, v in config["training"].items()}, **params},
        checkpoint, history, progress, identity=checkpoint_identity(study, method, network, **(recorded or {})))
    return final
