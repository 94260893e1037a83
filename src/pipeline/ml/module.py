"""The LightningModule every study's network is trained as.

A study's module builds its network, saves its hyperparameters (``learning_rate`` and
``lr_schedule`` among them) and gives its ``loss``; the training and validation steps
and the optimiser are ``StudyModule``'s, so every study trains by the same rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import lightning.pytorch as pl
import numpy as np
import torch

from pipeline.ml.trainer import adam_with_schedule


class StudyModule(pl.LightningModule, ABC):
    """Steps around ``loss``, Adam with the saved ``learning_rate`` and ``lr_schedule``
    (``adam_with_schedule``). A module without its ``loss`` cannot be made."""

    @abstractmethod
    def loss(self, batch, stage: str) -> torch.Tensor:
        """The scalar loss of ``batch`` at ``stage`` ("train" or "val"), logged through
        ``log_loss`` with whatever else the study logs at that stage."""

    def log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """Log ``loss`` as ``<stage>_loss``: ``val_loss`` is what early stopping and the
        best checkpoint watch (``build_trainer``), the mean over every rank's batches."""
        if stage == "val":
            self.log_validation("val_loss", loss, batch_size, prog_bar=True)
        else:
            self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=batch_size)

    def log_validation(self, name: str, value: torch.Tensor | float, batch_size: int, prog_bar: bool = False) -> None:
        """Log a validation metric, a mean per jet (event, image) over the batches: Lightning
        sums value x batch_size and batch_size over the ranks of a data-parallel training
        (``sync_dist``), so every rank sees the mean over all validation batches, as one
        process would."""
        self.log(name, value, prog_bar=prog_bar, batch_size=batch_size, sync_dist=True)

    def gather_validation(self, values: np.ndarray) -> np.ndarray:
        """``values`` of every rank's validation batches, concatenated in rank order (the same
        array on every rank): for metrics that are no mean over batches (an AUC)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return values
        parts = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, values)
        return np.concatenate(parts)

    def training_step(self, batch, batch_idx):
        return self.loss(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self.loss(batch, "val")

    def configure_optimizers(self):
        return adam_with_schedule(self, self.hparams.learning_rate, self.hparams.lr_schedule)
