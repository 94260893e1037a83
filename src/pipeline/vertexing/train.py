"""Training a learned vertex finder: one Lightning fit, logged to MLflow, outputs as files."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from typing import Mapping

import lightning.pytorch as pl

from pipeline.config import derive_seed
from pipeline.formats import TRACK_FEATURES
from pipeline.outputs import atomic_output

log = logging.getLogger(__name__)


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
    from pipeline.training import build_trainer, mlflow_logger, run_tags
    from pipeline.vertexing.data import TrackGraphDataModule
    from pipeline.vertexing.models import ENCODERS, VertexFinder

    if method not in ENCODERS:
        raise ValueError(f"unknown learned vertex finder {method!r}; expected one of {ENCODERS}")
    settings = config["training"]
    checkpoint, history = Path(checkpoint), Path(history)
    pl.seed_everything(derive_seed(config["seed"], "vertexing", method), workers=True, verbose=False)

    data = TrackGraphDataModule({"train": train_path, "val": val_path}, settings["batch_size"],
                                settings["num_workers"], seed=derive_seed(config["seed"], "vertexing", method, "batches"))
    model = VertexFinder(method, len(TRACK_FEATURES), config["vertexing"]["network"],
                         learning_rate=settings["learning_rate"], threshold=config["vertexing"]["threshold"])
    stage = {key: config[key] for key in ("seed", "vertexing", "training")}
    logger = mlflow_logger(config, run_name=f"train-{method}", tags={**run_tags(stage, [train_path, val_path]), "method": method})
    logger.log_hyperparams({"method": method, "parameters": sum(p.numel() for p in model.parameters()),
                            **{f"training.{k}": v for k, v in settings.items()},
                            **{f"network.{k}": v for k, v in config["vertexing"]["network"].items()}})
    work = checkpoint.parent / f".{checkpoint.stem}-work"
    trainer = build_trainer(config, work, logger=logger, progress=progress)
    recorder = EpochHistory()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=data)

    best = trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"training {method} produced no checkpoint in {work}")
    with atomic_output(checkpoint) as tmp:
        shutil.copyfile(best, tmp)
    recorder.write(history)
    logger.experiment.log_artifact(logger.run_id, str(checkpoint), artifact_path="model")
    logger.experiment.log_artifact(logger.run_id, str(history))
    shutil.rmtree(work, ignore_errors=True)
    final = recorder.rows[-1] if recorder.rows else {}
    log.info("trained %s: best checkpoint %s, last epoch %s", method, checkpoint, final)
    return final
