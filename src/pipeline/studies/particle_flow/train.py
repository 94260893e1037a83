"""Training the learned models of the particle-flow study (``cnn``, ``graph``, ``cnn_no_track``).

Each is trained by the shared recipe (``pipeline.ml.trainer.train_method``: MLflow,
checkpoints, resuming) with the study's ``particle_flow.training`` overrides, on the
train and val files of the study's sample, seeded from the global seed and the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pipeline.ml.checkpoints import checkpoint_identity
from pipeline.ml.trainer import train_method
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.data import ParticleFlowDataModule
from pipeline.studies.particle_flow.methods import LEARNED
from pipeline.studies.particle_flow.models import ParticleFlowModule


def network_config(config: Mapping, method: str) -> dict:
    """The config settings of a method's network (the ``cnn`` section for both CNNs)."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned particle-flow method {method!r}; expected one of {LEARNED}")
    study = config["particle_flow"]
    section = "graph" if method == "graph" else "cnn"
    settings = dict(study[section])
    if method == "graph":
        settings["window"] = list(study["calorimeter"]["window"])
    settings["fine"] = study["calorimeter"]["fine"]
    return settings


def network_identity(config: Mapping, method: str) -> dict:
    """What a checkpoint of ``method`` trained with ``config`` records (``checkpoint_identity``):
    its ``network_config``."""
    return checkpoint_identity("particle_flow", method, network_config(config, method))


def build_model(config: Mapping, method: str):
    """The untrained ParticleFlowModule of ``method`` (config with the study's training
    overrides, ``study_training_config``)."""
    settings = network_config(config, method)
    if method == "graph":
        settings.pop("fine")
    training = config["training"]
    return ParticleFlowModule(method, WindowGeometry.from_config(config).shapes, settings,
                              learning_rate=training["learning_rate"], lr_schedule=training["lr_schedule"])


def train_particle_flow(config: Mapping, method: str, data: Mapping[str, str | Path], checkpoint: str | Path,
                        history: str | Path, progress: bool = True) -> dict[str, float]:
    """Train ``method`` on ``data`` {"train": path, "val": path} (particle_flow_images
    files); write the best checkpoint (lowest val_loss, with its MLflow run id) and the
    per-epoch history; log the run ``particle_flow.train.<method>``. Returns the last epoch's metrics."""
    missing = {"train", "val"} - set(data)
    if missing:
        raise ValueError(f"particle_flow train {method}: no particle_flow_images file for {sorted(missing)}")
    settings = network_config(config, method)

    def datamodule(resolved: Mapping) -> ParticleFlowDataModule:
        training = resolved["training"]
        return ParticleFlowDataModule({"train": data["train"], "val": data["val"]}, training["batch_size"],
                                      training["num_workers"], seed=config["seed"], name=method)

    return train_method(config, "particle_flow", method, datamodule, lambda resolved: build_model(resolved, method),
                        [data["train"], data["val"]], ("particle_flow",),
                        {f"network.{k}": v for k, v in settings.items()}, checkpoint, history, progress,
                        network=settings)
