"""Checkpoints are read with torch's restricted unpickler: a crafted file that carries a
pickled callable is refused with an error naming it, by every command that takes a
``--checkpoint``, and the callable never runs; our own checkpoints load as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from default_config import default_optimiser

from pipeline.ml.checkpoints import (
    IDENTITY_KEY,
    CheckpointError,
    check_checkpoint_names,
    check_identity,
    checkpoint_identity,
    checkpoint_run_id,
    load_checkpoint,
    load_module,
)
from pipeline.tiny import tiny_workflow_config


class _OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: the marker file shows that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """(checkpoint, marker): a Lightning-shaped checkpoint with a callable in its hyperparameters."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"name": "set2graph", "payload": _OpensAFile(marker)},
                "mlflow_run_id": "0123456789abcdef"}, path)
    return path, marker


def _load_vertex_finder(path):
    from pipeline.studies.vertexing.models import VertexFinder

    return load_module(VertexFinder, path)


@pytest.mark.parametrize("read", [load_checkpoint, checkpoint_run_id, _load_vertex_finder],
                         ids=["load_checkpoint", "checkpoint_run_id", "load_module"])
def test_a_pickled_callable_is_refused_and_never_runs(crafted, read):
    path, marker = crafted
    with pytest.raises(CheckpointError, match=rf"{path.name}: refused to load: .*\(it names (io|builtins)\.open\)"):
        read(path)
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_naming_code_is_refused_as_code_in_every_format(tmp_path, zipped, protocol):
    # Protocols 4 and 5 stop torch's restricted unpickler at an opcode before it reaches the
    # global: its error then reads like a corrupt file and advises weights_only=False.
    marker, path = tmp_path / "code-ran", tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": _OpensAFile(marker)}}, path,
               _use_new_zipfile_serialization=zipped, pickle_protocol=protocol)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: ") and "(it names io.open)" in message, message
    assert "would run code" in message and "`pipeline <study> train`" in message
    assert "weights_only" not in message and "corrupt" not in message and "train-*" not in message
    assert not marker.exists()


def test_a_legacy_checkpoint_of_plain_data_loads(tmp_path):
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_the_same_file_would_run_its_code_if_unpickled_unrestricted(crafted):
    # The crafted file is a real threat: the unrestricted unpickler opens the marker.
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_an_own_checkpoint_loads_with_its_run_id_and_weights(tmp_path):
    from pipeline.studies.jet_images.models import ImageTagger

    model = ImageTagger(pixels=8, backbone="cnn", channels=[4], dense=4, dropout=0.0, **default_optimiser())
    path = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.6", "mlflow_run_id": "abc123"}, path)
    assert checkpoint_run_id(path) == "abc123"
    loaded = load_module(ImageTagger, path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


@pytest.mark.parametrize("write, fragment", [
    (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable PyTorch checkpoint (truncated or corrupt?)"),
    (lambda p: torch.save([1, 2], p), "holds a list, expected a checkpoint dict"),
    (lambda p: p.mkdir(), "checkpoint not found (a directory)"),
    (lambda p: None, "checkpoint not found"),
], ids=["garbage", "not a dict", "directory", "missing"])
def test_unreadable_checkpoints_are_named(tmp_path, write, fragment):
    path = tmp_path / "model.ckpt"
    write(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)
    assert "weights_only" not in str(info.value)  # torch's advice would run what the file holds


EXPECTED = checkpoint_identity("vertexing", "rnn", {"rnn_hidden": 128, "edge_widths": (256, 256), "threshold": 0.5})


@pytest.mark.parametrize("recorded, fragment", [
    (None, "records no identity (study, method, network settings): it was written before checkpoints recorded "
           "theirs, or not by a training of this pipeline; given as the vertexing study's 'rnn' model, so retrain it "
           "with `pipeline vertexing train --method rnn`"),
    ({**EXPECTED, "method": "set2graph"},
     "holds the vertexing study's 'set2graph' model, but was given as the vertexing study's 'rnn' model"),
    ({**EXPECTED, "study": "flavour_tagging"},
     "holds the flavour_tagging study's 'rnn' model, but was given as the vertexing study's 'rnn' model"),
    ({**EXPECTED, "network": {**EXPECTED["network"], "rnn_hidden": 64}},
     "the vertexing study's 'rnn' model was built with other network settings than the config's: rnn_hidden = 64 "
     "in the checkpoint, 128 in the config; evaluate it with the config it was trained with, or retrain it with "
     "`pipeline vertexing train --method rnn`"),
    ({**EXPECTED, "network": {"rnn_hidden": 128, "edge_widths": [256, 256]}},
     "threshold = '(not set)' in the checkpoint, 0.5 in the config"),
], ids=["no identity", "other method", "other study", "other width", "setting missing"])
def test_a_checkpoint_that_is_not_what_it_is_given_as_is_refused(recorded, fragment):
    state = {} if recorded is None else {IDENTITY_KEY: recorded}
    with pytest.raises(CheckpointError) as info:
        check_identity("rnn.ckpt", state, EXPECTED)
    assert str(info.value).startswith("rnn.ckpt: ") and fragment in str(info.value), str(info.value)


def test_an_identity_matches_with_lists_for_tuples_and_extra_records():
    # A weights-only load gives lists back; what the step does not ask about (a run id) is not compared.
    check_identity("rnn.ckpt", {IDENTITY_KEY: {**EXPECTED, "network": {**EXPECTED["network"], "edge_widths": [256, 256]},
                                               "vertex_finder_run_id": "abc"}}, EXPECTED)
    tagger = checkpoint_identity("flavour_tagging", "set2graph", {}, vertex_finder="set2graph")
    with pytest.raises(CheckpointError, match=r"\(vertex_finder 'rnn'\), but was given as .*\(vertex_finder 'set2graph'\)"):
        check_identity("t.ckpt", {IDENTITY_KEY: {**tagger, "vertex_finder": "rnn"}}, tagger)


def test_checkpoint_names_must_be_exactly_the_methods():
    check_checkpoint_names({"rnn": "a.ckpt", "set2graph": "b.ckpt"}, ("rnn", "set2graph"), "evaluate")
    with pytest.raises(ValueError, match=r"evaluate: needs a checkpoint for exactly \['rnn', 'set2graph'\]; "
                                         r"missing \['set2graph'\], unexpected \['foo'\] \(foo=x/foo.ckpt\)"):
        check_checkpoint_names({"rnn": "a.ckpt", "foo": "x/foo.ckpt"}, ("rnn", "set2graph"), "evaluate")


def test_load_module_checks_the_identity_before_building(tmp_path):
    from default_config import vertex_finder_training

    from pipeline.studies.vertexing.models import VertexFinder

    settings = {"rnn_hidden": 8, "rnn_layers": 1, "edge_widths": [8]}
    model = VertexFinder("rnn", 4, settings, **vertex_finder_training())
    identity = checkpoint_identity("vertexing", "rnn", settings)
    path = tmp_path / "rnn.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.6", IDENTITY_KEY: identity}, path)
    assert load_module(VertexFinder, path, identity).hparams.name == "rnn"
    with pytest.raises(CheckpointError, match=r"rnn\.ckpt: .*rnn_layers = 1 in the checkpoint, 2 in the config"):
        load_module(VertexFinder, path, checkpoint_identity("vertexing", "rnn", {**settings, "rnn_layers": 2}))


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    from pipeline.studies.jet_images.models import ImageTagger
    from pipeline.studies.vertexing.models import VertexFinder

    model = ImageTagger(pixels=4, backbone="mlp", widths=[4], dropout=0.0, **default_optimiser())
    path = tmp_path / "mlp.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.6"}, path)
    with pytest.raises(CheckpointError, match=r"mlp\.ckpt: not a VertexFinder checkpoint"):
        load_module(VertexFinder, path)


def _commands(directory: Path, checkpoint: Path) -> dict[str, list[str]]:
    """Every command that reads a user-given --checkpoint, with that checkpoint everywhere."""
    config, missing = str(directory / "config.yaml"), str(directory / "missing.h5")
    out = {split: str(directory / f"out_{split}.h5") for split in ("train", "val", "test")}
    ckpt = str(checkpoint)
    return {
        "score-edges": ["flavour_tagging", "score-edges", "--config", config, "--method", "set2graph", "--checkpoint", ckpt,
                        "--train", missing, "--val", missing, "--test", missing,
                        "--out-train", out["train"], "--out-val", out["val"], "--out-test", out["test"]],
        "evaluate-vertexing": ["vertexing", "evaluate", "--config", config, "--test", missing, "--output-dir",
                               str(directory / "v"), *(f"--checkpoint={m}={ckpt}" for m in ("set2graph", "rnn",
                                                                                          "track_pair"))],
        "evaluate-flavour": ["flavour_tagging", "evaluate", "--config", config, "--test", missing, "--output-dir",
                             str(directory / "f"),
                             *(f"--checkpoint={m}={ckpt}" for m in ("no_vertex", "set2graph", "rnn", "track_pair",
                                                                   "avr", "baseline")),
                             *(f"--edges={m}={missing}" for m in ("set2graph", "rnn", "track_pair", "avr",
                                                                  "baseline"))],
        "evaluate-images": ["jet_images", "evaluate", "--config", config, "--test", missing, "--output-dir",
                            str(directory / "i"),
                            *(f"--checkpoint={m}={ckpt}" for m in ("mlp", "cnn", "autoencoder", "autoencoder_inverse",
                                                                  "denoising_autoencoder"))],
    }


@pytest.mark.slow
@pytest.mark.parametrize("command", ["score-edges", "evaluate-vertexing", "evaluate-flavour", "evaluate-images"])
def test_every_command_refuses_a_crafted_checkpoint(tmp_path, crafted, command):
    path, marker = crafted
    config = {**tiny_workflow_config(), "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "pipeline", *_commands(tmp_path, path)[command]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert f"pipeline {' '.join(_commands(tmp_path, path)[command][:2])}: error: {path}: refused to load" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


FULL_DISK_SAVE = """
import sys
import torch
from pipeline.ml.checkpoints import save_checkpoint
try:
    save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}}, sys.argv[1])
except OSError as err:
    print(err.errno, err.filename)
"""


def test_a_full_disk_while_saving_a_checkpoint_is_an_os_error_naming_it(tmp_path):
    import errno

    from test_h5io import limited_file_size

    target = tmp_path / "model.ckpt"
    result = subprocess.run([sys.executable, "-c", FULL_DISK_SAVE, str(target)], cwd=Path(__file__).parent,
                            preexec_fn=limited_file_size(100_000), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(errno.EFBIG), str(target)]
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary file
