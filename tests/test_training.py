"""The shared training pieces: learning-rate schedules, checkpoints that carry their run."""

from __future__ import annotations

import itertools
import platform
import resource
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from workflow_runs import free_port

from pipeline.ml.checkpoints import CheckpointError, checkpoint_run_id
from pipeline.ml.trainer import adam_with_schedule, study_training_config


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
    config = {"seed": 1, "training": {"max_epochs": 30, "batch_size": 256},
              "jet_images": {"training": {"max_epochs": 5}}, "vertexing": {}}
    merged = study_training_config(config, "jet_images")
    assert merged["training"] == {"max_epochs": 5, "batch_size": 256}
    assert config["training"]["max_epochs"] == 30  # the original is untouched
    assert study_training_config(config, "vertexing")["training"] == config["training"]  # no overrides of its own


def test_a_checkpoint_without_a_run_id_is_named(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="foreign.ckpt: no 'mlflow_run_id'"):
        checkpoint_run_id(path)


def _log_one_run(uri: str, name: str) -> None:
    import mlflow

    from pipeline.ml.tracking import tracking_uri

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


# --- resumable batch orders -----------------------------------------------------------


def test_replayed_order_repeats_torchs_random_sampler_under_lightning_and_resumes_at_any_epoch():
    from torch.utils.data import RandomSampler

    from pipeline.ml.data import ReplayedRandomOrder

    # Lightning takes len(loader) batches an epoch and never asks the sampler for more.
    reference = RandomSampler(range(7), generator=torch.Generator().manual_seed(11))
    orders = [list(itertools.islice(reference, 7)) for _ in range(4)]
    replay = ReplayedRandomOrder(7, 11)
    assert [list(replay) for _ in range(4)] == orders
    assert len({tuple(order) for order in orders}) == 4  # a new order every epoch
    resumed = ReplayedRandomOrder(7, 11)
    resumed.set_epoch(2)
    assert [list(resumed), list(resumed)] == orders[2:]


def test_epoch_shuffle_reads_the_epoch_at_the_first_batch():
    """Lightning makes the first iterator before it calls set_epoch with the epoch it
    resumes at: the order must be that of the epoch set, not of the one made."""
    from pipeline.ml.data import EpochShuffle

    uninterrupted = EpochShuffle(9, seed=5, with_epoch=True)
    epochs = [list(uninterrupted) for _ in range(4)]
    assert all(item[1] == e for e, items in enumerate(epochs) for item in items)
    assert sorted(index for index, _ in epochs[3]) == list(range(9))
    resumed = EpochShuffle(9, seed=5, with_epoch=True)
    early = iter(resumed)
    resumed.set_epoch(3)
    assert list(early) == epochs[3]
    assert list(EpochShuffle(9, seed=6, with_epoch=True)) != epochs[0]


# --- MLflow tracking servers and the resume directory ------------------------------------


def test_an_unreachable_tracking_server_is_named_quickly():
    import time

    from pipeline.ml.tracking import TrackingServerError, tracking_uri

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingServerError, match=r"mlflow.tracking_uri = 'http://127\.0\.0\.1:\d+': no MLflow tracking server answers"):
        tracking_uri({"tracking_uri": uri, "experiment": "pipeline"})
    assert time.monotonic() - start < 5


def test_a_resume_directory_of_another_training_is_discarded(tmp_path):
    from pipeline.ml.resume import ResumeState

    first = ResumeState(tmp_path / "resume", tmp_path / "out" / "cnn.ckpt", fingerprint="config-a")
    first.start("run-1")
    first.checkpoints.mkdir()
    (first.checkpoints / "last.ckpt").write_bytes(b"epoch 3")
    same = ResumeState(tmp_path / "resume", tmp_path / "out" / "cnn.ckpt", fingerprint="config-a")
    assert same.directory == first.directory and same.directory.name.startswith("cnn-")
    assert same.last_checkpoint() == first.checkpoints / "last.ckpt" and same.run_id() == "run-1"
    # Another output path is another training; another config of the same one starts over.
    assert ResumeState(tmp_path / "resume", tmp_path / "other" / "cnn.ckpt", "config-a").directory != first.directory
    changed = ResumeState(tmp_path / "resume", tmp_path / "out" / "cnn.ckpt", fingerprint="config-b")
    assert changed.last_checkpoint() is None and not first.directory.exists()
    changed.start("run-2")
    changed.clear()
    assert not (tmp_path / "resume").exists()


def test_the_fingerprint_follows_config_parameters_and_input_checksums():
    from pipeline.ml.resume import ResumeState

    config = {"seed": 1, "training": {"max_epochs": 3}}
    tags = {"input.train.h5.sha256": "aa", "input.train.h5.path": "/x/train.h5", "pipeline.git_sha": "1"}
    base = ResumeState.fingerprint_of(config, {"model": "cnn"}, tags)
    assert base == ResumeState.fingerprint_of(config, {"model": "cnn"}, {**tags, "pipeline.git_sha": "2"})
    assert base != ResumeState.fingerprint_of({**config, "seed": 2}, {"model": "cnn"}, tags)
    assert base != ResumeState.fingerprint_of(config, {"model": "mlp"}, tags)
    assert base != ResumeState.fingerprint_of(config, {"model": "cnn"}, {**tags, "input.train.h5.sha256": "bb"})
    moved = {**config, "mlflow": {"tracking_uri": "http://server:5000"}, "training": {**config["training"],
                                                                                "resume_dir": "/scratch"}}
    assert ResumeState.fingerprint_of(moved, {"model": "cnn"}, tags) == base  # bookkeeping only


def test_inputs_of_the_same_name_keep_their_own_checksum_tags(tmp_path):
    from pipeline.ml.tracking import run_tags

    paths = []
    for sample, content in (("pflow", b"a"), ("pi0", b"b")):
        (tmp_path / sample).mkdir()
        paths.append(tmp_path / sample / "train.h5")
        paths[-1].write_bytes(content)
    (tmp_path / "templates.json").write_text("{}")
    tags = run_tags({}, [*paths, tmp_path / "templates.json"], "super_resolution", "train", "cnn")
    assert tags["input.pflow/train.h5.sha256"] != tags["input.pi0/train.h5.sha256"]
    assert tags["input.pi0/train.h5.path"] == str(paths[1])
    assert "input.templates.json.sha256" in tags and "input.train.h5.sha256" not in tags


def _conv_networks():
    from default_config import (
        default_optimiser,
        particle_flow_settings,
        particle_flow_shapes,
        super_resolution_settings,
        super_resolution_shapes,
    )

    from pipeline.studies.jet_images.models import ImageAutoencoder
    from pipeline.studies.particle_flow.models import build_network as particle_flow_network
    from pipeline.studies.super_resolution.models import build_network as super_resolution_network

    def calorimeter(shapes):
        return [torch.rand(3, h, w) * (torch.rand(3, h, w) < 0.3) for h, w in shapes]

    pf_shapes, sr_shapes = particle_flow_shapes(), super_resolution_shapes()
    yield ("particle_flow cnn", particle_flow_network("cnn", pf_shapes, particle_flow_settings("cnn")),
           (calorimeter(pf_shapes), torch.rand(3, 64, 64)))
    yield ("super_resolution redistribute",
           super_resolution_network("redistribute", sr_shapes, 64, super_resolution_settings()),
           (calorimeter(sr_shapes), torch.rand(3, 64, 64)))
    yield "jet_images autoencoder", ImageAutoencoder(16, (4, 8), 6, normalised=True, **default_optimiser()), (torch.rand(3, 16, 16),)


@pytest.mark.parametrize("index", range(3))
def test_channels_last_weights_keep_every_output_and_gradient(index):
    from pipeline.ml.memory_format import channels_last

    name, network, inputs = list(_conv_networks())[index]
    torch.manual_seed(index)
    for p in network.parameters():
        p.data.normal_(0.0, 0.3)
    exact = copy_of(network).double()  # the truth both float32 layouts are held to
    parameters = list(network.parameters())
    assert channels_last(network) is network and list(network.parameters()) == parameters  # same objects
    convolutions = [p for p in network.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                for p in convolutions if p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1), name
    double = [[t.double() for t in x] if isinstance(x, list) else x.double() for x in inputs]
    outputs = [torch.cat([o.flatten() for o in _as_list(net(*x))]) for net, x in ((network, inputs), (exact, double))]
    torch.testing.assert_close(outputs[0].double(), outputs[1], rtol=1e-4, atol=1e-5 * float(outputs[1].abs().max()))
    for out in outputs:
        out.pow(2).sum().backward()
    largest = max(float(p.grad.abs().max()) for p in exact.parameters())
    for (label, new), true in zip(network.named_parameters(), exact.parameters()):
        # float32 sums over every pixel and event: NCHW and channels-last alike are off the float64
        # gradient by up to ~5e-6 of the network's largest entry, whatever a tensor's own scale (a
        # bias before a group norm has a true gradient of 0 and only rounding)
        tolerance = 1e-3 * float(true.grad.abs().max()) + 1e-5 * largest
        torch.testing.assert_close(new.grad.double(), true.grad, rtol=0, atol=tolerance, msg=lambda m: f"{label}: {m}")


def test_channels_last_leaves_networks_without_convolutions_alone():
    from pipeline.ml.memory_format import channels_last

    network = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    before = [p.stride() for p in network.parameters()]
    assert [p.stride() for p in channels_last(network).parameters()] == before


def copy_of(network):
    import copy

    return copy.deepcopy(network)


def _as_list(output):
    return output if isinstance(output, (list, tuple)) else [output]


_FAULTS_OF_FIVE_STEPS = """
import resource, sys
import torch
from pipeline.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
step = lambda: torch.ones(1 << 24).sum()  # a 64 MiB activation, allocated, touched and freed
for _ in range(10):  # the heap grows to its working size in the first steps (a few of them)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as handle:
            return "[always]" in handle.read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.skipif(_huge_pages_always(), reason="2 MiB pages: a fault no longer counts a 4 kiB page")
def test_freed_tensors_stay_in_the_process_instead_of_being_mapped_again():
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS_OF_FIVE_STEPS, mode], check=True,
                                       capture_output=True, text=True).stdout)
              for mode in ("default", "retain")}
    pages = 5 * (1 << 26) // resource.getpagesize()
    assert faults["default"] > 0.9 * pages  # glibc unmaps every 64 MiB block and the kernel zeroes it again
    assert faults["retain"] <= 0.2 * pages  # at most one late step of the heap growing


def test_a_study_module_without_its_loss_cannot_be_made():
    from pipeline.ml.module import StudyModule

    class NoLoss(StudyModule):
        pass

    with pytest.raises(TypeError, match="abstract method loss"):
        NoLoss()
