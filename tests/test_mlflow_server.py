"""MLflow server mode as the README's cluster recipe sets it up: a real `mlflow server` on
loopback with users and passwords (`--app-name basic-auth`) and an explicit
`--allowed-hosts`. A training rule with the right credentials logs its run there; a job
without them, with wrong ones, addressing the server by a host name it does not allow,
or finding no server, stops before it reads any data with an error naming
`mlflow.tracking_uri` and the fix."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from workflow_runs import free_port, run_snakemake, write_config

from pipeline.ml.tracking import TrackingServerError, check_tracking_server
from pipeline.tiny import tiny_workflow_config

ADMIN, PASSWORD = "admin", "correct-horse-battery-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """(port, directory) of an `mlflow server` started as the README says: basic auth (the
    admin's password from the environment, its user store in the server's directory), an
    SQLite backend, proxied artifacts, and only 127.0.0.1 allowed as the Host."""
    directory = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = dict(os.environ, MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
         "--backend-store-uri", f"sqlite:///{directory}/mlflow.db", "--artifacts-destination", str(directory / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--allowed-hosts", "127.0.0.1,127.0.0.1:*"],
        cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.5)
        yield port, directory
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


@pytest.mark.slow
def test_a_training_rule_with_the_right_credentials_logs_its_run_and_model(tmp_path, mlflow_server, credentials):
    port, server_directory = mlflow_server
    uri = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {**tiny_workflow_config(), "mlflow": {"tracking_uri": uri, "experiment": "cluster"}}
    write_config(workdir, config)
    target = "results/jet_images/models/mlp.ckpt"
    run_snakemake(workdir, target, "--configfile", str(workdir / "config.yaml"))  # targets first
    assert not (workdir / "results" / "mlflow.db").exists()  # nothing went to the embedded store

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id])
    assert [run.info.run_name for run in runs] == ["jet_images.train.mlp"]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.user_id == ADMIN
    assert {"val_loss", "val_auc", "val_accuracy"} <= set(run.data.metrics)  # tiny: no 10 steps for train_loss
    assert run.data.params["method"] == "mlp"
    # The model: the exported checkpoint, stored by the server, byte for byte.
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/mlp.ckpt"]
    stored = Path(client.download_artifacts(run.info.run_id, "model/mlp.ckpt", str(tmp_path)))
    local = workdir / target
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(local.read_bytes()).digest()
    assert (server_directory / "artifacts").is_dir()  # the server's artifact store, not the job's
    # Credentials travel in the environment only: no stored config holds the password.
    for path in (workdir / "results").rglob("*.yaml"):
        assert PASSWORD not in path.read_text()


#: (case, the URI's host and port, credentials, expected message fragments).
REFUSED = [
    ("no credentials", "127.0.0.1:{port}", None,
     ["the server asks for credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"]),
    ("wrong password", "127.0.0.1:{port}", (ADMIN, "not-the-password"),
     ["the server refused the credentials of user 'admin' (HTTP 401)"]),
    ("host not allowed", "localhost:{port}", (ADMIN, PASSWORD),
     ["the server refuses requests addressed to 'localhost:{port}' (HTTP 403 Invalid Host header",
      "--allowed-hosts 'localhost,localhost:*'"]),
    ("no server", "127.0.0.1:{free}", (ADMIN, PASSWORD),
     ["no MLflow tracking server answers at http://127.0.0.1:{free}"]),
]


@pytest.mark.parametrize("case, address, login, expected", REFUSED, ids=[case[0] for case in REFUSED])
def test_a_job_the_server_would_refuse_stops_before_it_reads_data(tmp_path, mlflow_server, monkeypatch,
                                                                   case, address, login, expected):
    port, _ = mlflow_server
    values = {"port": port, "free": free_port()}
    uri = "http://" + address.format(**values)
    for name, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), login or (None, None)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    config = {**tiny_workflow_config(), "mlflow": {"tracking_uri": uri}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "jet_images", "train", "--config", str(tmp_path / "config.yaml"),
         "--method", "mlp", "--train", str(tmp_path / "missing_train.h5"), "--val", str(tmp_path / "missing_val.h5"),
         "--checkpoint", str(tmp_path / "mlp.ckpt"), "--history", str(tmp_path / "mlp.csv")],
        capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"pipeline jet_images train: error: mlflow.tracking_uri = '{uri}': " in result.stderr
    for fragment in expected:
        assert fragment.format(**values) in result.stderr
    assert "Traceback" not in result.stderr
    assert "missing_train.h5" not in result.stderr  # checked before any input is opened
    assert time.monotonic() - start < 60


def test_the_check_makes_the_api_call_a_job_makes_not_only_the_health_probe(mlflow_server, credentials):
    port, _ = mlflow_server
    # /health answers 200 for any Host and without credentials; the API call does not.
    with urllib.request.urlopen(f"http://localhost:{port}/health", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(TrackingServerError, match="Invalid Host header"):
        check_tracking_server(f"http://localhost:{port}", "pipeline")
    check_tracking_server(f"http://127.0.0.1:{port}", "an-experiment-that-does-not-exist-yet")
