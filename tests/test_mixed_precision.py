"""``training.precision: bf16-mixed`` on the CPU: every model, built as its study builds it
(the models and batches of bench/deterministic_ops.py), trains through the project's Trainer
(``build_trainer``: Lightning's bf16 autocast) on one batch to a finite loss that goes down."""

from __future__ import annotations

import copy

import pytest
import torch
from default_config import default_config
from test_deterministic_ops import MODELS
from torch.utils.data import DataLoader

from pipeline.ml.trainer import EpochHistory, build_trainer, process_flags_kept

#: Optimiser steps, one an epoch: the validation loss (the same batch) is read after each.
STEPS = 8


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_mixed_trains_every_model_on_the_cpu_to_a_falling_loss(name, tmp_path):
    config = copy.deepcopy(default_config())
    config["training"].update(accelerator="cpu", precision="bf16-mixed", max_epochs=STEPS, patience=STEPS,
                              learning_rate=3e-3, threads=1)
    torch.manual_seed(0)
    module, batch = MODELS[name](config, torch.Generator().manual_seed(0))
    module.hparams.learning_rate = 3e-3
    history = EpochHistory()
    loader = DataLoader([batch], batch_size=None)
    with process_flags_kept():
        trainer = build_trainer(config, tmp_path, progress=False, callbacks=[history])
        trainer.fit(module, loader, loader)
    assert trainer.precision == "bf16-mixed"
    losses = [row["val_loss"] for row in history.rows]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses))), losses
    assert min(losses[-3:]) < losses[0], losses
