"""Training the learned models of the particle-flow study (``cnn``, ``graph``, ``cnn_no_track``).

Each is trained by the shared Trainer (``pipeline.ml.trainer.fit_and_export``: MLflow,
checkpoints, resuming) with the study's ``particle_flow.training`` overrides, on the
train and val files of the study's sample, seeded from the global seed and the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pipeline.config import derive_seed
from pipeline.studies.particle_flow.methods import LEARNED


def study_config(config: Mapping) -> dict:
    """The config whose ``training`` section has the study's own overrides applied."""
    from pipeline.ml.trainer import with_training_overrides

    return with_training_overrides(config, config["particle_flow"]["training"])


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


def build_model(config: Mapping, method: str):
    """The untrained ParticleFlowModule of ``method`` (config with the study's training overrides)."""
    from pipeline.simulation.window_geometry import WindowGeometry
    from pipeline.studies.particle_flow.models import ParticleFlowModule

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
    import lightning.pytorch as pl

    from pipeline.ml.tracking import run_name, run_tags
    from pipeline.ml.trainer import fit_and_export
    from pipeline.studies.particle_flow.data import ParticleFlowDataModule

    missing = {"train", "val"} - set(data)
    if missing:
        raise ValueError(f"particle_flow train {method}: no particle_flow_images file for {sorted(missing)}")
    settings = network_config(config, method)
    config = study_config(config)
    training = config["training"]
    pl.seed_everything(derive_seed(config["seed"], "particle_flow", method), workers=True, verbose=False)
    datamodule = ParticleFlowDataModule({"train": data["train"], "val": data["val"]}, training["batch_size"],
                                        training["num_workers"], seed=config["seed"], name=method)
    model = build_model(config, method)
    stage = {key: config[key] for key in ("seed", "particle_flow", "training")}
    tags = run_tags(stage, [data["train"], data["val"]], "particle_flow", "train", method)
    params = {"method": method, **{f"training.{k}": v for k, v in training.items()},
              **{f"network.{k}": v for k, v in settings.items()}}
    final, _ = fit_and_export(config, model, datamodule, run_name("particle_flow", "train", method), tags, params,
                              checkpoint, history, progress)
    return final
