"""Killing a workflow run (SIGKILL to Snakemake and its jobs, as a node failure or a
Slurm time limit would) loses nothing: the HDF5 files that were finished stay valid
and are not remade, a half-written one never appears under its final name, and
`--rerun-incomplete` finishes the run, its training resuming from the last epoch."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from workflow_runs import SNAKEMAKE, run_snakemake, snakemake_env, write_config

from pipeline.inspect import file_schemas
from pipeline.io.hdf5 import check_schema
from pipeline.tiny import tiny_workflow_config

TARGET = "results/jet_images/models/cnn.ckpt"


def check_hdf5_outputs(results: Path) -> dict[Path, str]:
    """{path: sha256} of every HDF5 file under its final name in results/, each checked:
    a complete file of its schema whose every dataset reads back."""
    found = {}
    for path in sorted(results.rglob("*.h5")):
        if path.name.startswith("."):  # an atomic write's temporary file
            continue
        with h5py.File(path, "r") as f:
            check_schema(f, path, file_schemas()[str(f.attrs["schema"])])
            f.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
        found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kill_when(workdir: Path, condition, timeout: float = 300) -> None:
    """Run Snakemake towards TARGET and SIGKILL it, with every job it started, as soon as
    ``condition()`` holds."""
    run = subprocess.Popen([*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", TARGET,
                            "--configfile", str(workdir / "config.yaml")], env=snakemake_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            assert run.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "the kill condition never came"
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.slow
def test_a_killed_run_loses_nothing_and_resumes(tmp_path):
    config = tiny_workflow_config()
    # Long enough a training (no early stop) that the second kill lands in it.
    config["jet_images"]["training"] = {"max_epochs": 60, "patience": 60}
    write_config(tmp_path, config)
    results = tmp_path / "results"

    # 1. Kill while the simulation jobs run: after the first finished shard.
    kill_when(tmp_path, lambda: any(results.glob("*/generated/shard_0.h5")))
    finished = check_hdf5_outputs(results)
    assert finished and not (results / "jet_images" / "split").exists()

    # 2. Go on; kill again in the middle of the training, once it saved an epoch.
    assert run_snakemake(tmp_path, "--unlock").returncode == 0
    kill_when(tmp_path, lambda: any((tmp_path / "resume").glob("cnn-*/checkpoints/last.ckpt")))
    assert not (tmp_path / TARGET).exists()
    after_second_kill = check_hdf5_outputs(results)
    for path, digest in finished.items():  # what was finished was not made again
        assert after_second_kill[path] == digest, path

    # 3. Finish: only the training is left, and it resumes.
    assert run_snakemake(tmp_path, "--unlock").returncode == 0
    final = run_snakemake(tmp_path, TARGET, "--rerun-incomplete", "--configfile", str(tmp_path / "config.yaml"))
    assert "rule train_jet_images" in final.stdout + final.stderr
    assert "rule generate" not in final.stdout + final.stderr
    assert "resuming jet_images.train.cnn from" in (tmp_path / "logs" / "jet_images" / "train_cnn.log").read_text()
    assert check_hdf5_outputs(results) == after_second_kill
    assert (tmp_path / TARGET).stat().st_size > 0 and not (tmp_path / "resume").exists()
