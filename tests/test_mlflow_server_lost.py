"""A tracking server that dies mid-training (SIGKILL to `mlflow server`): the training
stops within the stated bound (``client_give_up_s``, docs/running.md) with one line naming
`mlflow.tracking_uri`, keeps its last epoch checkpoint in training.resume_dir, and once the
server is back the same command resumes it, in the same MLflow run. A real server and a
real training: nothing stands in for MLflow."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from test_image_models import image_config, write_images
from workflow_runs import free_port

from pipeline.ml.tracking import CLIENT_RETRIES, PROBE_TIMEOUT_S, bound_client_retries, client_give_up_s

EPOCHS = 12
DOCS = Path(__file__).resolve().parents[1] / "docs" / "running.md"


def test_jobs_get_bounded_retries_unless_their_environment_sets_its_own(monkeypatch):
    for name in CLIENT_RETRIES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # a user's explicit setting
    bound_client_retries()
    assert {name: os.environ[name] for name in CLIENT_RETRIES} == {**CLIENT_RETRIES, "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    assert client_give_up_s() == client_give_up_s(CLIENT_RETRIES) + 4 * (300 - 20)
    # MLflow's own defaults, for comparison: 20 minutes per call to a host that does not answer.
    assert client_give_up_s({}) == pytest.approx(1209)


def test_running_md_states_the_codes_settings_and_bound():
    text = " ".join(DOCS.read_text().split())
    for name, value in CLIENT_RETRIES.items():
        assert f"`{name}={value}`" in text
    assert f"gives up after at most {client_give_up_s(CLIENT_RETRIES):.0f} s" in text
    assert f"two {PROBE_TIMEOUT_S:.0f} s probes" in text


def start_server(directory: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on loopback with its store in ``directory`` (kept across restarts),
    once it answers /health."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{directory}/mlflow.db",
         "--artifacts-destination", str(directory / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        assert server.poll() is None, "mlflow server exited"
        assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
        time.sleep(0.2)


def kill(server: subprocess.Popen) -> None:
    """SIGKILL the server and its workers (its own process group)."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(30)


@pytest.mark.slow
def test_a_training_whose_server_dies_stops_in_bounded_time_and_resumes_once_it_is_back(tmp_path):
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    write_images(tmp_path / "train.h5", 1000, seed=1)
    write_images(tmp_path / "val.h5", 200, seed=2)
    config = image_config(tmp_path)
    config["jet_images"]["training"] = {"batch_size": 32, "max_epochs": EPOCHS, "patience": EPOCHS}
    config["mlflow"] = {"tracking_uri": uri, "experiment": "pipeline"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "pipeline", "jet_images", "train", "--config", str(tmp_path / "config.yaml"),
               "--method", "cnn", "--train", str(tmp_path / "train.h5"), "--val", str(tmp_path / "val.h5"),
               "--checkpoint", str(tmp_path / "out" / "cnn.ckpt"), "--history", str(tmp_path / "out" / "cnn.csv"),
               "--quiet"]
    # The job's own bounded retries, not the test environment's.
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_RETRIES}
    # The stated bound: one MLflow call's retries with the job's settings, two probes of
    # the server, and slack for the rest of the process (Lightning's teardown, the exit).
    bound = client_give_up_s(CLIENT_RETRIES) + 2 * PROBE_TIMEOUT_S + 15

    server = start_server(store, port)
    try:
        job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        last = []
        while not last and job.poll() is None and time.monotonic() < deadline:
            last = list((tmp_path / "resume").glob("cnn-*/checkpoints/last.ckpt"))
            time.sleep(0.05)
        assert last, "the training wrote no last.ckpt"
        kill(server)
        killed_at = time.monotonic()
        stderr = job.communicate(timeout=600)[1]
        took = time.monotonic() - killed_at
    finally:
        kill(server)

    print(f"the job stopped {took:.1f} s after the server was killed (bound {bound:.0f} s); it said:",
          *stderr.strip().splitlines()[-3:], sep="\n")
    assert job.returncode == 2, stderr
    assert took < bound, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"pipeline jet_images train: error: mlflow.tracking_uri = '{uri}': "
                                "the MLflow tracking server stopped answering"), stderr
    assert "training.resume_dir" in lines[-1] and "resumes" in lines[-1]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "cnn.ckpt").exists()
    # The last finished epoch's checkpoint is kept, with what the rerun needs.
    kept = torch.load(last[0], map_location="cpu", weights_only=False)
    assert 0 <= kept["epoch"] < EPOCHS - 1
    run_at_kill = (last[0].parent.parent / "mlflow_run_id").read_text()
    assert str(last[0]) in lines[-1]

    server = start_server(store, port)  # the same store: the run is still there
    try:
        from mlflow.tracking import MlflowClient

        # Nothing could mark it while the server was gone: not a FAILED run without a reason.
        assert MlflowClient(uri).get_run(run_at_kill).info.status == "RUNNING"
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming jet_images.train.cnn from" in resumed.stderr
        with open(tmp_path / "out" / "cnn.csv") as f:
            assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(EPOCHS))
        assert not (tmp_path / "resume").exists()
        run = MlflowClient(uri).get_run(run_at_kill)  # one run, continued and finished
        assert run.info.status == "FINISHED" and "failure.reason" not in run.data.tags
        exported = torch.load(tmp_path / "out" / "cnn.ckpt", map_location="cpu", weights_only=False)
        assert exported["mlflow_run_id"] == run_at_kill
    finally:
        kill(server)
