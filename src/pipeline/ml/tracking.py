"""MLflow bookkeeping every run shares, without Lightning: the tracking store (an SQLite
file initialised once, or a server checked before any data is read) and the tags that tie
a run to its code and inputs. MLflow is a side channel: checkpoints and metrics are also
plain files, so nothing downstream depends on its state."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

import h5py

from pipeline import __version__
from pipeline.config_schema import without_password
from pipeline.io.hdf5 import data_set_of, git_sha

log = logging.getLogger(__name__)


def file_checksum(path: str | Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def run_name(study: str, step: str, method: str) -> str:
    """The MLflow run name of one step of a study for one method: ``vertexing.train.set2graph``."""
    return f"{study}.{step}.{method}"


def run_tags(config: Mapping, inputs: Iterable[str | Path], study: str, step: str, method: str) -> dict[str, str]:
    """Tags every MLflow run carries: its study, step (the ``pipeline <study> <step>``
    sub-command), method and workflow rule (PIPELINE_RULE, set by the sub-command), by which
    the UI groups runs; package version, git SHA, the config, input-file checksums and the
    data set the input files were made from (``dataset``)."""
    tags = {"study": study, "step": step, "method": method, "rule": os.environ.get("PIPELINE_RULE", "none"),
            "pipeline.version": __version__, "pipeline.git_sha": git_sha() or "unknown"}
    data = []
    for key, path in _input_keys(inputs).items():
        tags[f"input.{key}.sha256"] = file_checksum(path)
        tags[f"input.{key}.path"] = str(path)
        made_from = data_set_of(path) if h5py.is_hdf5(path) else None
        if made_from:
            data.append(made_from)
    if data:  # what the run's data were made from: the simulation or a public data set
        tags["dataset"] = "; ".join(dict.fromkeys(data))
    tags["config.json"] = json.dumps(config, sort_keys=True)[:5000]
    return tags


def _input_keys(inputs: Iterable[str | Path]) -> dict[str, Path]:
    """{tag key: path}: a file's name, or as many of its last path parts as tell it from the
    other inputs of the same name (``pflow/train.h5``, ``pi0/train.h5``)."""
    paths = [Path(p) for p in inputs]

    def key(path: Path, depth: int) -> str:
        return "/".join(path.parts[-depth:])

    keys = {}
    for path in paths:
        depth = 1
        while depth < len(path.parts) and sum(key(other, depth) == key(path, depth) for other in paths) > 1:
            depth += 1
        keys[key(path, depth)] = path
    return keys


def tracking_uri(mlflow_settings: Mapping) -> str:
    """The configured tracking URI, ready to use: a relative SQLite path is made absolute
    (jobs may run from another directory), its directory created and the store
    initialised; a tracking server (http/https) must take the job's runs (``check_tracking_server``)."""
    uri = mlflow_settings["tracking_uri"]
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return _prepared_store(uri, mlflow_settings.get("experiment"))


@functools.lru_cache(maxsize=None)
def _prepared_store(uri: str, experiment: str | None) -> str:
    """Initialise (SQLite) or check (server) a store once per process: a command asks
    before it reads its data, and its logger asks again."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        initialise_sqlite_store(uri, path, experiment)
    elif uri.startswith(("http://", "https://")):
        bound_client_retries()
        check_tracking_server(uri, experiment or "pipeline")
    return uri


#: MLflow's HTTP client settings for our jobs, unless the job's environment sets them. MLflow
#: 3.x defaults (7 retries, backoff factor 2, 120 s time-out) keep a job whose server died
#: retrying for minutes per call, and Lightning makes more calls while it fails (about 8
#: minutes in all). With these, a call gives up after 4 attempts of at most 20 s each and
#: backoffs of 0, 2 and 4 s (+ up to 1 s jitter each): ``client_give_up_s()``, 88 s; about
#: 8 s, the backoffs alone, when the host refuses connections (a killed server). A job adds
#: at most two PROBE_TIMEOUT_S probes: about 100 s in all (docs/running.md). A Retry-After
#: header (a proxy's 503) could ask for any wait, so it is not honoured.
CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}

#: The tag that says why a run ended FAILED (``failure_reason``).
FAILURE_TAG = "failure.reason"

#: Time-out of the single request that asks whether the server still answers (``server_answers``).
PROBE_TIMEOUT_S = 5.0


def bound_client_retries() -> None:
    """Give MLflow's HTTP client the bounded retries of CLIENT_RETRIES, where the
    environment does not set its own (a user's explicit setting wins)."""
    for name, value in CLIENT_RETRIES.items():
        os.environ.setdefault(name, value)


def client_give_up_s(environ: Mapping[str, str] | None = None) -> float:
    """The longest one MLflow call to a server that does not answer takes with the settings
    of ``environ`` (default: this process's; unset ones have MLflow's defaults): every
    attempt running into the time-out, every backoff (urllib3: none before the first retry,
    then factor * 2**(n-1) plus jitter, at most 120 s) in full."""
    environ = os.environ if environ is None else environ
    retries = int(environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
    factor = float(environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
    jitter = float(environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1"))
    timeout = float(environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))
    backoff = sum(min(120.0, factor * 2 ** (n - 1) + jitter) for n in range(2, retries + 1))
    return (retries + 1) * timeout + backoff


def server_answers(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the store at ``uri`` answers now: always for a file store; one ``/health``
    request, no retries, for a server (it answers it without credentials)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        status, _ = _server_request(uri.rstrip("/") + "/health", timeout)
    except (urllib.error.URLError, OSError):
        return False
    return status == 200


def failure_reason(error: BaseException | None) -> str:
    """One line for a failed run's ``failure.reason`` tag."""
    if error is None:
        return "stopped with an error (no exception recorded)"
    if type(error).__name__ == "SIGTERMException":
        return "stopped by SIGTERM (a Slurm time limit?); running the job again resumes it"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


def _from_mlflow_client(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised from or while handling, came from MLflow's
    client or its HTTP requests."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        module = type(error).__module__
        if module.startswith(("mlflow", "requests", "urllib3")):
            return True
        error = error.__cause__ or error.__context__
    return False


def tracking_server_lost(config: Mapping, error: BaseException, run: str,
                         last_checkpoint: Path) -> TrackingServerError | None:
    """The error to end a training with when ``error`` is the tracking server going away
    while it trained (an MLflow call failed and the server does not answer now), else None.
    One line: the setting and its value, and that the job resumes once the server is back."""
    uri = config["mlflow"]["tracking_uri"]
    if not uri.startswith(("http://", "https://")) or not _from_mlflow_client(error) or server_answers(uri):
        return None
    if last_checkpoint.exists():
        kept = (f"the checkpoint of its last finished epoch is kept in training.resume_dir ({last_checkpoint}): "
                "run the same job again once the server is back and it resumes from there, in the same MLflow run")
    else:
        kept = "no epoch had finished, so nothing is kept: run the job again once the server is back"
    return TrackingServerError(
        f"mlflow.tracking_uri = {without_password(uri)!r}: the MLflow tracking server stopped answering while {run} "
        f"trained (MLflow's client gave up after its retries, at most {client_give_up_s():.0f} s per call); {kept}")


class TrackingServerError(RuntimeError):
    """The MLflow tracking server at the configured URI does not answer, or will not take
    this job's runs (host not allowed, no or wrong credentials); the message says how to fix it."""


def _server_request(url: str, timeout: float):
    """GET ``url`` as MLflow's client would send it: the credentials of the job's
    environment (MLFLOW_TRACKING_USERNAME / _PASSWORD, or MLFLOW_TRACKING_TOKEN) and its
    TLS settings (MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH).
    Returns (status, body text)."""
    headers = {}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]
    context = None
    if url.startswith("https://"):
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context = ssl._create_unverified_context()
        else:
            context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def check_tracking_server(uri: str, experiment: str = "pipeline", timeout: float = 10.0) -> None:
    """Raise TrackingServerError unless the MLflow server at ``uri`` takes this job's runs.

    It makes the call a job's logger makes first, ``experiments/get-by-name``, with the
    job's credentials (a ``/health`` probe is not enough: MLflow 3's server answers it for
    any Host header and without credentials, then refuses every API call with 403 "Invalid
    Host header" or 401). The training and evaluation commands call this before they load
    any data, so a wrong URI, a stopped server or missing credentials cost seconds, not a
    finished training whose logging then fails.
    """
    api = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?" + urllib.parse.urlencode(
        {"experiment_name": experiment})
    host = urllib.parse.urlsplit(uri).netloc.rpartition("@")[2]
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    prefix = f"mlflow.tracking_uri = {without_password(uri)!r}: "
    try:
        status, body = _server_request(api, timeout)
    except (urllib.error.URLError, OSError) as error:
        raise TrackingServerError(
            prefix + f"no MLflow tracking server answers at {without_password(uri)} ({getattr(error, 'reason', error)}). "
            "Start the server (docs/running.md: 'When to use a tracking server'), fix the URI, or use the embedded "
            "store: mlflow.tracking_uri: sqlite:///results/mlflow.db") from None
    if status == 200 or (status == 404 and "RESOURCE_DOES_NOT_EXIST" in body):
        return  # the experiment exists, or the job will create it
    if status == 403 and "Invalid Host header" in body:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
        raise TrackingServerError(
            prefix + f"the server refuses requests addressed to {host!r} (HTTP 403 Invalid Host header: MLflow's "
            f"guard against DNS rebinding accepts only the host names it is told). Start it with "
            f"--allowed-hosts '{name},{name}:*' (and --cors-allowed-origins for the UI on other hosts)")
    if status == 401:
        if user:
            raise TrackingServerError(
                prefix + f"the server refused the credentials of user {user!r} (HTTP 401); check "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the job's environment")
        raise TrackingServerError(
            prefix + "the server asks for credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the job's environment (never in config files)")
    if status == 403:
        raise TrackingServerError(
            prefix + f"user {user!r} may not read experiment {experiment!r} (HTTP 403 {body.strip()[:200]}); "
            "ask the server's admin for permission, or log to another experiment (mlflow.experiment)")
    raise TrackingServerError(
        prefix + f"HTTP {status} from {without_password(api)} ({body.strip()[:200]}): is this an MLflow tracking server?")


def initialise_sqlite_store(uri: str, path: Path, experiment: str | None = None) -> None:
    """Open the SQLite store, and create the experiment, under a file lock. The first
    connection to a new store runs MLflow's schema migrations, and two jobs doing that at
    once (parallel Snakemake jobs on a fresh results/) fail with errors such as "No such
    index"; two jobs creating the same experiment at once collide too."""
    # here: every command imports this module (cli.main, for its errors); mlflow costs 1-2.5 s
    from mlflow.tracking import MlflowClient

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(uri)
        if experiment and client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)


def mlflow_logger(config: Mapping, run_name: str, tags: Mapping[str, str], run_id: str | None = None):
    """An MLFlowLogger on the configured tracking URI and experiment: a new run, or the run
    ``run_id`` continued (a resumed training) when the store still has it."""
    # here: every command imports this module (cli.main, for its errors); mlflow costs 1-2.5 s
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(config["mlflow"])
    if run_id is not None:
        try:
            previous = MlflowClient(uri).get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s of the interrupted training is not in %s; starting a new run", run_id, uri)
            run_id = None
        else:
            if FAILURE_TAG in previous.data.tags:  # it goes on: no longer a failed run
                MlflowClient(uri).delete_tag(run_id, FAILURE_TAG)
            if previous.info.status != "RUNNING":
                MlflowClient(uri).update_run(run_id, status="RUNNING")
    return _logger_class(MLFlowLogger)(
        experiment_name=config["mlflow"]["experiment"],
        run_name=run_name,
        tracking_uri=uri,
        tags=dict(tags),
        log_model=False,
        run_id=run_id,
    )


@functools.lru_cache(maxsize=None)
def _logger_class(base: type) -> type:
    """Lightning's MLFlowLogger whose failed runs say why, and which gives up on a server
    that is gone instead of retrying the run's end (MLflow's client would take
    ``client_give_up_s()`` for each of its two calls, after the failed call that got here)."""

    class PipelineMLFlowLogger(base):
        def finalize(self, status: str = "success") -> None:
            if status != "failed" or not self._initialized:
                return super().finalize(status)
            # Lightning calls this while it handles the training's exception.
            error = sys.exc_info()[1]
            if not server_answers(self._tracking_uri):
                # The run stays RUNNING; the rerun continues it once the server is back.
                log.warning("MLflow run %s not marked FAILED: its tracking server does not answer", self.run_id)
                return None
            try:
                self.experiment.set_tag(self.run_id, FAILURE_TAG, failure_reason(error))
                super().finalize(status)
            except Exception as tag_error:  # must not hide the training's own error
                log.warning("could not mark MLflow run %s FAILED: %s", self.run_id, tag_error)
            return None

    return PipelineMLFlowLogger


def log_run(config: Mapping, name: str, tags: Mapping[str, str], metrics: Mapping[str, float],
            artifacts: Iterable[str | Path] = (), params: Mapping[str, object] | None = None,
            stage: Mapping | None = None, checkpoint: str | Path | None = None) -> str:
    """One finished MLflow run (an evaluation, a fit without Lightning): its finite
    ``metrics``, ``params``, the files ``artifacts``, ``checkpoint`` (the evaluated
    network's) under ``model/`` as its training run has it, and ``stage`` (the config it
    ran with) as config.json. Returns the run id."""
    # here: every command imports this module (cli.main, for its errors); mlflow costs 1-2.5 s
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config["mlflow"]))
    mlflow.set_experiment(config["mlflow"]["experiment"])
    with mlflow.start_run(run_name=name, tags=dict(tags)) as run, _failure_reason_tagged(run.info.run_id):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        if params:
            mlflow.log_params(dict(params))
        for path in artifacts:
            mlflow.log_artifact(str(path))
        if checkpoint is not None:
            mlflow.log_artifact(str(checkpoint), artifact_path="model")
        if stage is not None:
            mlflow.log_dict(json.loads(json.dumps(stage)), "config.json")
        return run.info.run_id


@contextlib.contextmanager
def _failure_reason_tagged(run_id: str):
    """Tag the active run with ``failure.reason`` if the block raises (mlflow.start_run then
    ends it FAILED), where the store still answers."""
    import mlflow

    try:
        yield
    except BaseException as error:
        try:
            if server_answers(mlflow.get_tracking_uri()):
                mlflow.MlflowClient().set_tag(run_id, FAILURE_TAG, failure_reason(error))
        except Exception as tag_error:  # must not hide the block's own error
            log.warning("could not tag MLflow run %s with its failure: %s", run_id, tag_error)
        raise
