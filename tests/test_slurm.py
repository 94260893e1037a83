"""The workflow on a real Slurm cluster, through Snakemake's Slurm executor plugin and the
`profiles/slurm-ci` profile: the tiny DAG's jobs are submitted with sbatch, run, and
are reported; a failing job is reported as failed.

Needs a running Slurm (`tests/slurm/start-single-node.sh` makes a one-node one as root).
Without one the tests skip, except in CI (CI=true), where they fail: `.ci/run` starts it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from workflow_runs import REPO, job_counts, run_snakemake

from pipeline.run_config import load_config
from pipeline.studies import active_studies
from pipeline.tiny import TINY_WORKFLOW_CONFIG

PROFILES = REPO / "workflow" / "profiles"
PROFILE = PROFILES / "slurm-ci"


def slurm_missing() -> str | None:
    """Why no Slurm can run the tests here, or None when one can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client (sinfo, sbatch) on PATH"
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s"
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()}"
    states = result.stdout.split()
    if not any(state.rstrip("*") in ("idle", "mix", "alloc", "comp") for state in states):
        return f"no Slurm node takes jobs (node states: {states or 'none'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_missing()
    if reason is not None:
        message = f"{reason}; start a one-node Slurm with tests/slurm/start-single-node.sh (as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI runs the Slurm tests and found no Slurm: {message}")
        pytest.skip(message)


def through_slurm(workdir, *args, check=True):
    return run_snakemake(workdir, "--profile", str(PROFILE), *args, cores=None, check=check, timeout=1800)


@pytest.mark.slow
def test_the_tiny_dag_runs_through_slurm_and_a_failing_job_is_reported(tmp_path, slurm):
    config = TINY_WORKFLOW_CONFIG  # .test/config/config.yaml
    run = through_slurm(tmp_path, "--configfile", str(config))
    output = run.stdout + run.stderr
    results = tmp_path / "results"
    for table in ("vertexing/metrics.csv", "flavour_tagging/metrics.csv", "jet_images/taggers.csv",
                  "jet_images/denoising.csv", "particle_flow/metrics.csv", "super_resolution/physics.csv",
                  "tiny/split/test.h5"):
        assert (results / table).stat().st_size > 0, table

    # Every job but the target rule `all` went through sbatch, and Slurm kept its log.
    jobs = job_counts(output)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert len(submitted) == jobs["total"] - jobs["all"] == len(set(submitted))
    rules_logged = {p.name for p in (tmp_path / ".snakemake" / "slurm_logs").iterdir()}
    assert {f"rule_{name}" for name in jobs if name not in ("all", "total")} == rules_logged
    assert "gpu=0" in output  # the profile trains on CPUs: this cluster has no GPU
    assert "Auto-selected partition 'debug'" in output  # from the profile's partitions.yaml

    # A job that fails on the cluster (its input is not a pipeline file) is reported failed.
    (results / "tiny" / "tracks" / "shard_0.h5").write_bytes(b"not an HDF5 file")
    failed = through_slurm(tmp_path, "results/tiny/split/train.h5", "--configfile", str(config), check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Error in rule split" in output and re.search(r"SLURM-job '\d+' failed", output)
    assert "shard_0.h5" in (tmp_path / "logs" / "split" / "tiny.log").read_text()
    assert not (results / "tiny" / "split" / "train.h5").exists()  # no output of a failed job is kept


def planned_jobs(workdir: Path, profile: str, configfile) -> list[tuple[str, dict]]:
    """The rule and resources of every job a dry run in ``workdir`` with `profile` plans for `configfile`."""
    plan = run_snakemake(workdir, "-n", "--profile", str(PROFILES / profile),
                         "--configfile", str(configfile), cores=None)
    jobs = []
    for block in (plan.stdout + plan.stderr).split("\nrule ")[1:]:
        line = next((x for x in block.splitlines() if x.strip().startswith("resources:")), None)
        if line is not None:
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            jobs.append((block.split(":", 1)[0], {key.strip(): value for key, value in pairs}))
    return jobs


def partition_of(profile: str, rule: str, resources: dict) -> str | None:
    """The partition the Slurm plugin picks for a job from the profile's partitions.yaml."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    partitions = read_partition_file(PROFILES / profile / "partitions.yaml")
    job = SimpleNamespace(name=rule, resources=resources, threads=1)
    return get_best_partition(partitions, job, logging.getLogger("slurm partitions"))


def test_the_users_profile_sends_exactly_the_training_jobs_to_the_gpu_partition(tmp_path):
    """A dry run with profiles/slurm (no cluster needed): the training jobs ask for gpu=1 and
    the plugin's partition selection, reading the profile's partitions.yaml, sends them and
    only them to the GPU partition; no rule is named in the profile."""
    jobs = planned_jobs(tmp_path, "slurm", REPO / "config.yaml")
    default = load_config(REPO / "config.yaml")  # every study but the learning curves, off by default
    training = {study.training_rule for study in active_studies(default) if study.training_rule}
    assert "train_vertexing" in training and len(training) == 5
    assert training < {rule for rule, _ in jobs} and len(jobs) > 100
    for rule, resources in jobs:
        if rule in training:
            assert resources["gpu"] == "1" and partition_of("slurm", rule, resources) == "gpu", (rule, resources)
        elif rule != "all":
            assert "gpu" not in resources and partition_of("slurm", rule, resources) == "cpu", (rule, resources)



@pytest.mark.slow
def test_a_two_process_training_is_one_slurm_job_of_two_tasks_and_writes_once(tmp_path, slurm):
    """training.devices 2 through the Slurm profile: the training job asks for two tasks,
    srun starts both ranks (they take part or the training fails: check_launch compares
    SLURM_NTASKS with the ranks), and rank 0 alone writes the checkpoint and the MLflow run."""
    two = tmp_path / "two_processes.yaml"
    # Batches of 2 events: the tiny validation split has enough for both ranks.
    two.write_text(yaml.safe_dump({"training": {"devices": 2}, "particle_flow": {"training": {"batch_size": 2}}}))
    configs = [str(TINY_WORKFLOW_CONFIG), str(two)]
    # The training's data made here, on local cores; only the training goes through Slurm.
    data = [f"results/particle_flow/data/{split}.h5" for split in ("train", "val")]
    run_snakemake(tmp_path, *data, "--configfile", *configs)
    run = through_slurm(tmp_path, "results/particle_flow/models/cnn.ckpt", "--configfile", *configs)
    output = run.stdout + run.stderr
    assert len(re.findall(r"has been submitted with SLURM jobid (\d+)", output)) == 1
    assert "tasks=2" in output and "mpi=srun" in output  # the job's resources: two tasks, started by srun
    log = (tmp_path / "logs" / "particle_flow" / "train_cnn.log").read_text()
    assert "process 0 of 2 (data-parallel)" in log and "process 1 of 2 (data-parallel)" in log
    assert log.count("trained particle_flow.train.cnn") == 1  # one writer
    assert (tmp_path / "results" / "particle_flow" / "models" / "cnn.ckpt").stat().st_size > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "attributes.run_name = 'particle_flow.train.cnn'")
    assert [run.info.status for run in runs] == ["FINISHED"]
