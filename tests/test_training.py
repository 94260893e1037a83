"""The shared training pieces: learning-rate schedules, checkpoints that carry their run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.training import adam_with_schedule, checkpoint_run_id, with_training_overrides


def module(max_epochs: int):
    layer = torch.nn.Linear(2, 1)
    return SimpleNamespace(parameters=layer.parameters, trainer=SimpleNamespace(max_epochs=max_epochs))


def test_cosine_schedule_decays_to_zero_over_max_epochs():
    config = adam_with_schedule(module(4), 1e-3, "cosine")
    optimiser, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(4):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        scheduler.step()
    assert rates == pytest.approx([1e-3, 1e-3 * (1 + 2**-0.5) / 2, 5e-4, 1e-3 * (1 - 2**-0.5) / 2])
    assert optimiser.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_is_plain_adam_and_unknown_ones_are_refused():
    assert isinstance(adam_with_schedule(module(3), 1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        adam_with_schedule(module(3), 1e-3, "linear")


def test_training_overrides_replace_only_the_given_keys():
    config = {"seed": 1, "training": {"max_epochs": 30, "batch_size": 256}}
    merged = with_training_overrides(config, {"max_epochs": 5})
    assert merged["training"] == {"max_epochs": 5, "batch_size": 256}
    assert config["training"]["max_epochs"] == 30  # the original is untouched


def test_a_checkpoint_without_a_run_id_is_named(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(KeyError, match="foreign.ckpt: no 'mlflow_run_id'"):
        checkpoint_run_id(path)


def _log_one_run(uri: str, name: str) -> None:
    import mlflow

    from pipeline.training import tracking_uri

    mlflow.set_tracking_uri(tracking_uri({"tracking_uri": uri, "experiment": "pipeline"}))
    mlflow.set_experiment("pipeline")
    with mlflow.start_run(run_name=name):
        mlflow.log_metric("x", 1.0)


def test_parallel_jobs_can_create_the_sqlite_store_together(tmp_path):
    """Jobs that start together on a fresh results/ all open (and migrate) the store."""
    import multiprocessing

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_log_one_run, args=(uri, f"job-{k}")) for k in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["job-0", "job-1", "job-2"]
