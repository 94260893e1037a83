"""Training the learned models of the super-resolution study (``redistribute``, ``cnn``).

Each is trained by the shared recipe (``pipeline.ml.trainer.train_method``: MLflow,
checkpoints, resuming) with the study's ``super_resolution.training`` overrides, on the
train files of both of the study's samples together (the pflow and the pi0 gun), validated
on their val files, seeded from the global seed and the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from pipeline.io.hdf5 import RaggedReader
from pipeline.ml.checkpoints import checkpoint_identity
from pipeline.ml.trainer import train_method
from pipeline.simulation.window_geometry import WindowGeometry
from pipeline.studies.particle_flow.batches import file_geometry
from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
from pipeline.studies.super_resolution.batches import fine_mean_squares
from pipeline.studies.super_resolution.data import SuperResolutionDataModule
from pipeline.studies.super_resolution.detector import detector_config
from pipeline.studies.super_resolution.methods import LEARNED
from pipeline.studies.super_resolution.models import SuperResolutionModule, network_settings


def detector_geometry(config: Mapping) -> tuple[list[tuple[int, int]], int, tuple[float, float]]:
    """(layer shapes, fine, window) of the study's detector (``detector.detector_config``)."""
    geometry = WindowGeometry.from_config(detector_config(config))
    return geometry.shapes, geometry.fine, geometry.window


def check_files(config: Mapping, paths: Sequence[str | Path]) -> None:
    """ValueError naming the first particle_flow_images file whose geometry (layer shapes,
    fine cells, window; stored in the file) is not the study's detector's."""
    shapes, fine, window = detector_geometry(config)
    for path in paths:
        with RaggedReader(path, PARTICLE_FLOW_IMAGES) as reader:
            found = file_geometry(reader)
        if found != (shapes, fine, window):
            raise ValueError(f"{path}: written for layer shapes {found[0]}, fine {found[1]}, window {found[2]}, but "
                             f"the study's detector (super_resolution.granularity, particle_flow.calorimeter) has "
                             f"{shapes}, fine {fine}, window {window}; rebuild the file with this config")


def network_identity(config: Mapping, method: str) -> dict:
    """What a checkpoint of ``method`` trained with ``config`` records (``checkpoint_identity``):
    the ``network_settings`` of ``super_resolution.network`` (the layer shapes are checked
    against the detector's from the checkpoint's hyperparameters)."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned super-resolution method {method!r}; expected one of {LEARNED}")
    return checkpoint_identity("super_resolution", method, network_settings(config["super_resolution"]["network"]))


def build_model(config: Mapping, method: str, loss_scales: Sequence[float] | None = None):
    """The untrained SuperResolutionModule of ``method`` (config with the study's training
    overrides, ``study_training_config``), its loss over ``loss_scales`` [GeV^2] per layer
    (``models.fine_loss``)."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned super-resolution method {method!r}; expected one of {LEARNED}")
    shapes, fine, _ = detector_geometry(config)
    training = config["training"]
    return SuperResolutionModule(method, shapes, fine, config["super_resolution"]["network"],
                                 learning_rate=training["learning_rate"], lr_schedule=training["lr_schedule"],
                                 loss_scales=loss_scales)


def _listed(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def train_super_resolution(config: Mapping, method: str, data: Mapping[str, Sequence[str | Path]],
                           checkpoint: str | Path, history: str | Path, progress: bool = True) -> dict[str, float]:
    """Train ``method`` on ``data`` {"train": [paths], "val": [paths]} (particle_flow_images
    files of this study's detector, several per split); write the best checkpoint (lowest
    val_loss, with its MLflow run id) and the per-epoch history; log the run
    ``super_resolution.train.<method>``. Returns the last epoch's metrics."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned super-resolution method {method!r}; expected one of {LEARNED}")
    missing = sorted(split for split in ("train", "val") if not data.get(split))
    if missing:
        raise ValueError(f"super_resolution train {method}: no particle_flow_images file for {missing}")
    files = {split: _listed(data[split]) for split in ("train", "val")}
    inputs = [*files["train"], *files["val"]]
    check_files(config, inputs)
    shapes, fine, _ = detector_geometry(config)
    # The loss's per-layer scales: the training set's mean squared fine truth (a pass over its fine cells).
    scales = fine_mean_squares(files["train"], len(shapes), fine).tolist()

    def datamodule(resolved: Mapping) -> SuperResolutionDataModule:
        training = resolved["training"]
        return SuperResolutionDataModule(files, training["batch_size"], training["num_workers"],
                                         seed=config["seed"], name=method)

    layer_names = [layer["name"] for layer in config["particle_flow"]["calorimeter"]["layers"]]
    params = {**{f"network.{k}": v for k, v in network_settings(config["super_resolution"]["network"]).items()},
              **{f"loss_scale.{name}": s for name, s in zip(layer_names, scales)}}
    return train_method(config, "super_resolution", method, datamodule,
                        lambda resolved: build_model(resolved, method, scales), inputs,
                        ("particle_flow", "super_resolution"), params, checkpoint, history, progress,
                        network=network_settings(config["super_resolution"]["network"]))
