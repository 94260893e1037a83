"""A run that ends FAILED says why (its ``failure.reason`` tag), where the store answers;
a training that fails before its first epoch ends leaves nothing a later run resumes from.
Real MLflow stores (SQLite files) and a real Lightning Trainer."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.ml.resume import ResumeState
from pipeline.ml.tracking import log_run, mlflow_logger
from pipeline.ml.trainer import build_trainer, process_flags_kept
from pipeline.run_config import resolve_config
from pipeline.tiny import tiny_config


def config_in(tmp_path) -> dict:
    config = tiny_config()
    config["training"].update(max_epochs=2, threads=1, accelerator="cpu", devices=1, resume_dir=str(tmp_path / "resume"))
    config["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "pipeline"}
    return resolve_config(config, source="test_failed_runs")


class Diverging(pl.LightningModule):
    """Fails in its third training step, as a training whose loss turns NaN is stopped."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, index):
        if index == 2:
            raise FloatingPointError("loss is nan at step 2\n(second line of the message)")
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def runs(tmp_path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])


def test_a_training_that_fails_ends_its_run_failed_with_the_reason(tmp_path):
    config = config_in(tmp_path)
    resume = ResumeState(config["training"]["resume_dir"], tmp_path / "out" / "model.ckpt", "fingerprint-a")
    assert resume.last_checkpoint() is None
    logger = mlflow_logger(config, "test.train.diverging", {"study": "test"})
    resume.start(logger.run_id)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=8)
    with pytest.raises(FloatingPointError), process_flags_kept():
        trainer = build_trainer(config, resume.checkpoints, logger=logger, progress=False)
        trainer.fit(Diverging(), train_dataloaders=data)

    [run] = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure.reason"] == "FloatingPointError: loss is nan at step 2 (second line of the message)"
    # No epoch finished: the directory left behind holds nothing the same training resumes from.
    again = ResumeState(config["training"]["resume_dir"], tmp_path / "out" / "model.ckpt", "fingerprint-a")
    assert again.last_checkpoint() is None


def test_a_logged_run_that_fails_says_why(tmp_path):
    config = config_in(tmp_path)
    with pytest.raises(Exception):
        log_run(config, "test.evaluate.missing", {"study": "test"}, {"auc": 0.5},
                artifacts=[tmp_path / "no_such_plot.png"])
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert "no_such_plot.png" in run.data.tags["failure.reason"]
