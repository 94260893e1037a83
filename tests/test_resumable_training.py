"""A training killed mid-way (SIGKILL, as a Slurm time limit ends with) and started again
resumes from its last epoch checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_image_models import image_config, write_images

#: Training epochs: enough that the kill lands mid-way, a second or two each.
EPOCHS = 6
#: Agreement of the resumed and the uninterrupted run. On a CPU they agree to the last bit
#: (same batches, same dropout masks, same optimiser state); the tolerance leaves room for
#: non-deterministic GPU kernels.
TOLERANCE = 1e-6


def train_command(directory: Path, output: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "jet_images", "train", "--config", str(directory / "config.yaml"),
            "--method", "cnn",
            "--train", str(directory / "train.h5"), "--val", str(directory / "val.h5"),
            "--checkpoint", str(directory / output / "cnn.ckpt"), "--history", str(directory / output / "cnn.csv"),
            "--quiet"]


def history(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A directory with the data, the config and the uninterrupted run's outputs."""
    directory = tmp_path_factory.mktemp("resumable")
    write_images(directory / "train.h5", 4000, seed=1)
    write_images(directory / "val.h5", 500, seed=2)
    config = image_config(directory)
    config["jet_images"]["training"] = {"batch_size": 32, "max_epochs": EPOCHS, "patience": EPOCHS}
    config["jet_images"]["cnn"] = {"channels": [8, 16], "dense": 16, "dropout": 0.2}  # dropout: RNG matters
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    subprocess.run(train_command(directory, "uninterrupted"), check=True, capture_output=True)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_training_resumes_and_matches_the_uninterrupted_one(uninterrupted, kill):
    directory, output = uninterrupted, f"killed_{kill.name}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Start the same training again elsewhere, and kill it once it has saved an epoch.
    job = subprocess.Popen(train_command(directory, output), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    last = []
    while not last and job.poll() is None and time.monotonic() < deadline:
        last = list((directory / "resume").glob("cnn-*/checkpoints/last.ckpt"))
        time.sleep(0.05)
    assert last, "the training wrote no last.ckpt"
    job.send_signal(kill)
    stderr = job.communicate()[1]
    if kill == signal.SIGKILL:
        assert job.returncode == -signal.SIGKILL
    else:  # Lightning stops at the next batch; the command fails (128 + 15), naming what resumes it
        assert job.returncode == 143 and "stopped by SIGTERM" in stderr
    assert not (directory / output / "cnn.ckpt").exists()  # it was stopped before the end
    epoch_at_kill = torch.load(last[0], map_location="cpu", weights_only=False)["epoch"]
    assert epoch_at_kill < EPOCHS - 1
    run_at_kill = (last[0].parent.parent / "mlflow_run_id").read_text()
    if kill == signal.SIGTERM:  # Lightning ends the run FAILED: it says why
        from mlflow.tracking import MlflowClient

        failed = MlflowClient(f"sqlite:///{directory}/mlflow.db").get_run(run_at_kill)
        assert failed.info.status == "FAILED" and "stopped by SIGTERM" in failed.data.tags["failure.reason"]

    resumed = subprocess.run(train_command(directory, output), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming jet_images.train.cnn from" in resumed.stderr

    # Every epoch, those before the kill included, in the history; the same numbers.
    expected, found = history(directory / "uninterrupted" / "cnn.csv"), history(directory / output / "cnn.csv")
    assert [row["epoch"] for row in found] == list(range(EPOCHS))
    for a, b in zip(expected, found):
        assert b == pytest.approx(a, rel=TOLERANCE, abs=1e-12)
    weights = [torch.load(directory / name / "cnn.ckpt", map_location="cpu", weights_only=False)
               for name in ("uninterrupted", output)]
    for key, value in weights[0]["state_dict"].items():
        assert torch.allclose(weights[1]["state_dict"][key], value, rtol=TOLERANCE, atol=1e-9), key
    assert not (directory / "resume").exists()  # cleared once the outputs are written

    # One MLflow run, continued and finished, not a dead one and a new one.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    run = client.get_run(weights[1]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "jet_images.train.cnn"
    assert "failure.reason" not in run.data.tags  # the resumed run did not fail
    assert weights[1]["mlflow_run_id"] == run_at_kill
    steps = [sorted({m.step for m in client.get_metric_history(w["mlflow_run_id"], "val_loss")}) for w in weights]
    assert steps[1] == steps[0]
