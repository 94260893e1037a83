"""MLflow server mode: a training rule logs to a real `mlflow server` on loopback (the
setting for many cluster jobs), and a server that does not answer stops a training
command before it reads any data."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.tiny import tiny_workflow_config
from pipeline.training import TrackingServerUnreachable, check_tracking_server
from workflow_runs import free_port, run_snakemake, write_config


@pytest.fixture
def mlflow_server(tmp_path):
    """The URI of an `mlflow server` (SQLite backend, proxied artifacts) on a free port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                check_tracking_server(uri, timeout=2)
                break
            except TrackingServerUnreachable:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 90 s"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@pytest.mark.slow
def test_a_training_rule_logs_its_run_metrics_and_model_to_a_server(tmp_path, mlflow_server):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {**tiny_workflow_config(), "mlflow": {"tracking_uri": mlflow_server, "experiment": "cluster"}}
    write_config(workdir, config)
    target = "results/jet_images/models/mlp.ckpt"
    run_snakemake(workdir, target, "--configfile", str(workdir / "config.yaml"))  # targets first
    assert not (workdir / "results" / "mlflow.db").exists()  # nothing went to the embedded store

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id])
    assert [run.info.run_name for run in runs] == ["images-mlp"]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {"val_loss", "val_auc", "val_accuracy"} <= set(run.data.metrics)  # tiny: no 10 steps for train_loss
    assert run.data.params["model"] == "mlp"
    # The model: the exported checkpoint, stored by the server, byte for byte.
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/mlp.ckpt"]
    stored = Path(client.download_artifacts(run.info.run_id, "model/mlp.ckpt", str(tmp_path)))
    local = workdir / target
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(local.read_bytes()).digest()
    assert (tmp_path / "artifacts").is_dir()  # the server's artifact store, not the job's


def test_an_unreachable_server_stops_training_before_it_reads_data(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = {**tiny_workflow_config(), "mlflow": {"tracking_uri": uri}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "train-images", "--config", str(tmp_path / "config.yaml"),
         "--model", "mlp", "--train", str(tmp_path / "missing_train.h5"), "--val", str(tmp_path / "missing_val.h5"),
         "--checkpoint", str(tmp_path / "mlp.ckpt"), "--history", str(tmp_path / "mlp.csv")],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert f"mlflow.tracking_uri = '{uri}': no MLflow tracking server answers at {uri}/health" in result.stderr
    assert "missing_train.h5" not in result.stderr  # checked before any input is opened
    assert time.monotonic() - start < 60
