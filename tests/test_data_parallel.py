"""Data-parallel training through the real command: two DDP processes on the CPU (gloo)
take the same optimiser steps as one process that accumulates two batches, a killed
two-process training resumes to the uninterrupted one's weights, and one process writes.

Why the two agree: a DDP step averages the gradients of rank 0's batch and rank 1's; one
process with ``accumulate_batches: 2`` averages the gradients of the same two batches (rank
r reads positions r, r + 2, ... of the epoch's seeded order). Dropout is switched off here:
each rank draws its own masks (``RandomStreams``), one process draws others.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from test_resumable_training import history

#: Weights of the two forms after the same steps: the same sums in another order (gloo adds
#: the two ranks' gradients, then divides; one process scales each loss by 1/2, then adds),
#: so they agree to float32 rounding over a few steps, relative 1e-5 of the weight.
RTOL, ATOL = 1e-5, 1e-6


def train(study: str, method: str, config: Path, data: dict, out: Path, **popen) -> subprocess.Popen:
    """``python -m pipeline <study> train`` with ``data`` {"train": path(s), "val": path(s)},
    started (``popen``: Popen's arguments, default: output captured as text)."""
    command = [sys.executable, "-m", "pipeline", study, "train", "--config", str(config), "--method", method]
    for split in ("train", "val"):
        paths = data[split] if isinstance(data[split], list) else [data[split]]
        command += [f"--{split}", *map(str, paths)]
    command += ["--checkpoint", str(out / f"{method}.ckpt"), "--history", str(out / f"{method}.csv"), "--quiet"]
    return subprocess.Popen(command, **(popen or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}))


def finished(*jobs: subprocess.Popen) -> list[str]:
    """The standard errors of ``jobs``, each of which must end well."""
    errors = []
    for job in jobs:
        _, stderr = job.communicate()
        assert job.returncode == 0, stderr[-3000:]
        errors.append(stderr)
    return errors


def write_config(config: dict, path: Path, **training) -> Path:
    config = {**config, "training": {**config["training"], "accelerator": "cpu", "threads": 1, **training}}
    path.write_text(yaml.safe_dump(config))
    return path


def even_batch_size(batches, sizes=range(100, 1000)) -> int:
    """The first of ``sizes`` for which ``batches(size)`` is even and at most 16: so that the
    two ranks' last step and the accumulated last step hold the same two batches (with an
    odd count rank 1 wraps around to the epoch's first batch, and the last accumulated step
    has one batch), and few enough for a quick test."""
    for size in sizes:
        if batches(size) % 2 == 0 and batches(size) <= 16:
            return size
    raise ValueError("no batch size gives an even number of batches")


# --- the shares, by hand -----------------------------------------------------------------


def test_training_shares_are_equal_and_cover_the_order_validation_shares_count_each_batch_once():
    from pipeline.ml.parallel import rank_share

    order = [4, 0, 3, 1, 2]
    # Training: every rank as many batches (rank 1 wraps around to the order's first), none lost.
    assert [rank_share(order, r, 2, equal=True) for r in (0, 1)] == [[4, 3, 2], [0, 1, 4]]
    assert [rank_share(order, r, 3, equal=True) for r in range(3)] == [[4, 1], [0, 2], [3, 4]]
    # Validation: each batch once, the shares differ by one at most.
    assert [rank_share(order, r, 2, equal=False) for r in (0, 1)] == [[4, 3, 2], [0, 1]]
    assert rank_share(order, 0, 1, equal=True) == order


def test_every_rank_reads_its_share_of_the_same_seeded_epoch_order():
    from pipeline.ml.data import EpochShuffle, ReplayedRandomOrder

    for sampler_class in (EpochShuffle, ReplayedRandomOrder):
        alone = sampler_class(7, seed=5)
        ranks = [sampler_class(7, seed=5).shard(r, 2, equal=True) for r in (0, 1)]
        for epoch in (3, 0, 1):  # any epoch, in any order: a resumed training starts at its epoch
            for sampler in (alone, *ranks):
                sampler.set_epoch(epoch)
            order = list(alone)
            shares = [list(sampler) for sampler in ranks]
            assert shares[0] == order[0::2] and shares[1] == order[1::2] + order[:1]
            assert [len(sampler) for sampler in ranks] == [4, 4]


def test_the_launch_is_refused_before_any_work_when_slurm_gave_other_tasks(monkeypatch):
    from pipeline.ml.parallel import check_launch, process_rank

    settings = {"devices": 2, "num_nodes": 2, "launcher": "srun", "precision": "32-true", "accelerator": "cpu"}
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with pytest.raises(ValueError, match="training.launcher: srun, but this process is not a Slurm task"):
        check_launch(settings)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(ValueError, match=r"devices x num_nodes = 2 x 2 = 4 processes, but .* SLURM_NTASKS=2"):
        check_launch(settings)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    check_launch(settings)
    # Slurm's task id is the rank under srun, not when Lightning starts the ranks inside one task.
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert process_rank("srun") == 3 and process_rank("lightning") == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_rank("lightning") == 1


# --- one study's data and config each ----------------------------------------------------


def jet_images_case(directory: Path) -> tuple[dict, dict, str]:
    from test_image_models import image_config, write_images

    data = {"train": write_images(directory / "train.h5", 256, seed=1),
            "val": write_images(directory / "val.h5", 96, seed=2)}
    config = image_config(directory)
    config["jet_images"]["training"] = {"batch_size": 32}  # 8 batches
    config["jet_images"]["cnn"]["dropout"] = 0.0
    return config, data, "cnn"


def vertexing_case(directory: Path, graphs: dict) -> tuple[dict, dict, str]:
    from pipeline.tiny import tiny_config

    config = tiny_config()
    with h5py.File(graphs["train"]) as f:
        jets = len(f["jets/flavour"])
    config["vertexing"]["network"].update(set_widths=[16, 16], edge_widths=[16])
    config["training"].update(batch_size=even_batch_size(lambda size: math.ceil(jets / size)), max_epochs=1)
    return config, {"train": graphs["train"], "val": graphs["val"]}, "set2graph"


def flavour_tagging_case(directory: Path, graphs: dict) -> tuple[dict, dict, str]:
    from pipeline.studies.flavour_tagging.data import MIXED_SLICES, FlavourBatches
    from pipeline.tiny import tiny_config

    config = tiny_config()
    config["flavour_tagging"].update(width=8, message_layers=1, readout_widths=[8])
    size = even_batch_size(lambda size: len(FlavourBatches(graphs["train"], None, size, MIXED_SLICES)))
    config["training"].update(batch_size=size, max_epochs=1)
    return config, {"train": graphs["train"], "val": graphs["val"]}, "no_vertex"


def particle_flow_case(directory: Path) -> tuple[dict, dict, str]:
    from test_particle_flow import PI_PLUS, PI_ZERO_OFFSET, gun_config, images_of

    config = gun_config([PI_PLUS, PI_ZERO_OFFSET], events=24)
    *_, path = images_of(directory, config)
    config["particle_flow"]["graph"].update(k=4, width=8, n_layers=1)
    config["particle_flow"]["training"] = {"batch_size": 6, "max_epochs": 1}  # 4 batches
    return config, {"train": path, "val": path}, "graph"


def super_resolution_case(directory: Path) -> tuple[dict, dict, str]:
    from test_super_resolution_models import images_of, study_config

    config = study_config(directory)
    pflow = images_of(directory, config, "pflow", "pflow")  # 24 events
    config["super_resolution"]["training"] = {"batch_size": 6, "max_epochs": 1}  # 4 batches
    return config, {"train": [pflow], "val": [pflow]}, "cnn"


CASES = ["jet_images", "vertexing", "flavour_tagging", "particle_flow", "super_resolution"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory, track_graphs) -> dict:
    made = {}
    for study in CASES:
        directory = tmp_path_factory.mktemp(study)
        maker = globals()[f"{study}_case"]
        config, data, method = maker(directory, track_graphs) if study in ("vertexing", "flavour_tagging") \
            else maker(directory)
        config["mlflow"]["tracking_uri"] = f"sqlite:///{directory}/mlflow.db"
        config["training"]["resume_dir"] = str(directory / "resume")
        made[study] = (directory, config, data, method)
    return made


@pytest.mark.slow
@pytest.mark.parametrize("study", CASES)
def test_two_processes_take_the_steps_of_one_that_accumulates_two_batches(cases, study):
    directory, config, data, method = cases[study]
    # Side by side: the launches' start-up (imports, the second rank's) leaves the cores idle.
    parallel, single = finished(
        train(study, method, write_config(config, directory / "ddp.yaml", devices=2), data, directory / "ddp"),
        train(study, method, write_config(config, directory / "acc.yaml", accumulate_batches=2), data,
              directory / "acc"))
    assert "process 1 of 2 (data-parallel)" in parallel and "process 0 of 2" in parallel
    assert "data-parallel" not in single
    found, expected = (torch.load(directory / name / f"{method}.ckpt", map_location="cpu", weights_only=True)
                       for name in ("ddp", "acc"))
    # The same optimiser steps (half the batches: two per step), the same weights after them.
    assert found["global_step"] == expected["global_step"] > 0
    assert found["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(found["state_dict"][key], value, rtol=RTOL, atol=ATOL, msg=lambda m: f"{key}: {m}")
    # The validation loss is the mean over all validation batches, on one process or two.
    a, b = history(directory / "ddp" / f"{method}.csv"), history(directory / "acc" / f"{method}.csv")
    assert [row["val_loss"] for row in a] == pytest.approx([row["val_loss"] for row in b], rel=1e-5)


#: Epochs of the killed training: enough that the kill lands mid-way.
EPOCHS = 4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    """A two-process jet-image training with dropout (every rank's own masks: the random
    streams of both ranks matter), run to the end: its directory and data."""
    from test_image_models import image_config, write_images

    directory = tmp_path_factory.mktemp("ddp_resume")
    data = {"train": write_images(directory / "train.h5", 1024, seed=1),
            "val": write_images(directory / "val.h5", 128, seed=2)}
    config = image_config(directory)
    config["jet_images"]["training"] = {"batch_size": 32, "max_epochs": EPOCHS, "patience": EPOCHS}
    config["jet_images"]["cnn"]["dropout"] = 0.2
    write_config(config, directory / "config.yaml", devices=2)
    finished(train("jet_images", "cnn", directory / "config.yaml", data, directory / "uninterrupted"))
    return directory, data


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_two_process_training_resumes_to_the_uninterrupted_result(uninterrupted, kill):
    directory, data = uninterrupted
    killed = f"killed_{kill.name}"
    # Both ranks signalled at once once an epoch is saved, as Slurm ends a job step at its
    # time limit (SIGTERM, then SIGKILL) or a node dies.
    job = train("jet_images", "cnn", directory / "config.yaml", data, directory / killed,
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, last = time.monotonic() + 120, []
    while not last and job.poll() is None and time.monotonic() < deadline:
        last = list((directory / "resume").glob("cnn-*/checkpoints/last.ckpt"))
        time.sleep(0.05)
    assert last, "the training wrote no last.ckpt"
    os.killpg(job.pid, kill)
    stderr = job.communicate(timeout=60)[1]  # SIGTERM: both ranks end at once, none waits for the other
    if kill == signal.SIGTERM:
        assert job.returncode == 143 and "process 0 of 2: jet_images.train.cnn stopped by SIGTERM" in stderr
    assert not (directory / killed / "cnn.ckpt").exists()
    saved = torch.load(last[0], map_location="cpu", weights_only=True)
    assert saved["epoch"] < EPOCHS - 1
    assert len(saved["callbacks"]["RandomStreams"]["ranks"]) == 2  # both ranks' streams

    [resumed] = finished(train("jet_images", "cnn", directory / "config.yaml", data, directory / killed))
    assert "resuming jet_images.train.cnn from" in resumed
    expected, found = history(directory / "uninterrupted" / "cnn.csv"), history(directory / killed / "cnn.csv")
    assert [row["epoch"] for row in found] == list(range(EPOCHS))
    for a, b in zip(expected, found):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-12)
    a, b = (torch.load(directory / name / "cnn.ckpt", map_location="cpu", weights_only=True)
            for name in ("uninterrupted", killed))
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-6, atol=1e-9, msg=lambda m: f"{key}: {m}")
    assert not (directory / "resume").exists()

    # One writer: rank 0's MLflow runs only, the killed one continued.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    # One run a training (the uninterrupted one, each resumed one), all finished.
    assert len(runs) == 1 + len(list(directory.glob("killed_*/cnn.ckpt")))
    assert {run.info.status for run in runs} == {"FINISHED"} and b["mlflow_run_id"] in {r.info.run_id for r in runs}
