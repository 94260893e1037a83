"""Training the models of the jet-image study: two taggers, three autoencoders.

* ``mlp``, ``cnn``: top-vs-QCD taggers (``ImageTagger``) on both classes;
* ``autoencoder``: trained on QCD only, top jets are the anomaly (Farina et al.);
* ``autoencoder_inverse``: trained on top only, QCD jets are the anomaly (the inverse
  task, which Finke et al. found to fail: simpler images reconstruct better anyway);
* ``denoising_autoencoder``: noisy images in, clean images out, on both classes.

Every model is trained by the shared recipe (``pipeline.ml.trainer.train_method``) with
the study's ``jet_images.training`` overrides, seeded from the config's global seed and
the model's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import lightning.pytorch as pl

from pipeline.ml.checkpoints import checkpoint_identity
from pipeline.ml.trainer import train_method
from pipeline.studies.jet_images.data import JetImageDataModule
from pipeline.studies.jet_images.formats import IMAGE_CLASSES
from pipeline.studies.jet_images.methods import METHODS, TAGGERS
from pipeline.studies.jet_images.models import ImageAutoencoder, ImageTagger, input_scale_for

#: The label (0 QCD, 1 top) each autoencoder trains on; None: both classes.
TRAINING_CLASS = {"mlp": None, "cnn": None, "autoencoder": 0, "autoencoder_inverse": 1,
                  "denoising_autoencoder": None}


def trained_on(model_name: str) -> str:
    """The class a model trains on: "qcd", "top" or "all"."""
    label = TRAINING_CLASS[model_name]
    return "all" if label is None else IMAGE_CLASSES[label]


def check_model_name(model_name: str) -> None:
    """ValueError naming the model unless it is one of METHODS."""
    if model_name not in METHODS:
        raise ValueError(f"unknown jet-image model {model_name!r}; expected one of {METHODS}")


def network_settings(study: Mapping, model_name: str) -> dict:
    """The config settings that define a model's network (and its data: noise, normalisation)."""
    check_model_name(model_name)
    section = model_name if model_name in TAGGERS else "autoencoder"
    settings = {"pixels": study["pixels"], "normalise": study["normalise"], **study[section]}
    if model_name == "denoising_autoencoder":
        settings.update({f"denoising.{k}": v for k, v in study["denoising"].items()})
    return settings


def model_identity(config: Mapping, model_name: str) -> dict:
    """What a checkpoint of ``model_name`` trained with ``config`` records (``checkpoint_identity``):
    its ``network_settings``."""
    return checkpoint_identity("jet_images", model_name, network_settings(config["jet_images"], model_name))


def build_model(config: Mapping, model_name: str) -> pl.LightningModule:
    """The untrained network of ``model_name`` from the resolved config (its ``training``
    section already carrying the study's overrides, see ``study_training_config``)."""
    check_model_name(model_name)
    study, training = config["jet_images"], config["training"]
    optimiser = {"learning_rate": training["learning_rate"], "lr_schedule": training["lr_schedule"],
                 "input_scale": input_scale_for(study["pixels"], study["normalise"])}
    if model_name == "mlp":
        return ImageTagger(study["pixels"], "mlp", widths=study["mlp"]["widths"], dropout=study["mlp"]["dropout"],
                           **optimiser)
    if model_name == "cnn":
        cnn = study["cnn"]
        return ImageTagger(study["pixels"], "cnn", channels=cnn["channels"], dense=cnn["dense"],
                           dropout=cnn["dropout"], **optimiser)
    return ImageAutoencoder(study["pixels"], study["autoencoder"]["channels"], study["autoencoder"]["latent"],
                            denoising=model_name == "denoising_autoencoder", normalised=study["normalise"],
                            trained_on=trained_on(model_name), **optimiser)


def train_image_model(config: Mapping, model_name: str, data: Mapping[str, str | Path], checkpoint: str | Path,
                      history: str | Path, progress: bool = True, logged_as: str | None = None,
                      tags: Mapping[str, str] | None = None) -> dict[str, float]:
    """Train one model of the study on ``data`` {"train": path, "val": path} (jet_images
    files); write the best checkpoint (lowest val_loss, with its MLflow run id) and the
    per-epoch history CSV; log the run ``jet_images.train.<model>`` (``logged_as`` in place of
    ``jet_images``, with extra ``tags``) to MLflow. Returns the last epoch's metrics."""
    settings = network_settings(config["jet_images"], model_name)
    missing = {"train", "val"} - set(data)
    if missing:
        raise ValueError(f"jet_images train {model_name}: no jet_images file for {sorted(missing)}")
    study = config["jet_images"]

    def datamodule(resolved: Mapping) -> JetImageDataModule:
        training = resolved["training"]
        return JetImageDataModule(
            {"train": data["train"], "val": data["val"]}, study["pixels"], training["batch_size"],
            training["num_workers"], seed=config["seed"], name=model_name, normalise=study["normalise"],
            select=TRAINING_CLASS[model_name],
            noise=study["denoising"] if model_name == "denoising_autoencoder" else None)

    params = {"trained_on": trained_on(model_name), **{f"network.{k}": v for k, v in settings.items()}}
    return train_method(config, "jet_images", model_name, datamodule, lambda resolved: build_model(resolved, model_name),
                        [data["train"], data["val"]], ("jet_images",), params, checkpoint, history, progress,
                        tags={"trained_on": trained_on(model_name), **(tags or {})}, network=settings,
                        logged_as=logged_as)
