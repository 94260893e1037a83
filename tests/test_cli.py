"""The `pipeline` command: every step runs by hand and explains itself; errors name the culprit."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser, main

CONFIG = {
    "seed": 11,
    "samples": {"mini": {"process": "ttbar", "events_per_shard": 12, "shards": 2, "batch_size": 6}},
}


def pipeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory):
    """Generate, track and inspect one shard through the command line."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    generated, tracks = tmp / "gen.h5", tmp / "tracks.h5"
    for args in (
        ["generate", "--config", str(config), "--sample", "mini", "--shard", "1", "--output", str(generated), "--quiet"],
        ["simulate-tracker", "--config", str(config), "--input", str(generated), "--output", str(tracks), "--quiet"],
    ):
        result = pipeline(*args)
        assert result.returncode == 0, result.stderr
    return {"config": config, "generated": generated, "tracks": tracks, "dir": tmp}


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every sub-command of ``parser``, groups and their steps (("vertexing",),
    ("vertexing", "train"), ...), read from the parser's own sub-parsers."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*path, name), *command_paths(sub, (*path, name))]
    return paths


COMMANDS = command_paths(build_parser())


def test_the_parser_walk_finds_the_simulation_steps_and_every_studys_group():
    from pipeline.studies import STUDIES

    assert {("generate",), ("simulate-tracker",), ("simulate-calorimeter",), ("inspect",), ("config",)} <= set(COMMANDS)
    for study in STUDIES:
        assert (study,) in COMMANDS and any(len(c) == 2 and c[0] == study for c in COMMANDS)
    assert ("vertexing", "train") in COMMANDS and ("jet_images", "evaluate") in COMMANDS


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "pipeline")
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["usage: pipeline", *command]) + " "), out.splitlines()[0]


def test_the_parser_and_help_import_neither_torch_nor_lightning():
    """`pipeline --help` and every job's argument parsing stay fast: the heavy frameworks
    are imported by the steps that use them, when they run."""
    code = (
        "import sys\n"
        "from pipeline.cli import build_parser, main\n"
        "build_parser()\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: pipeline" in result.stdout
    assert "HEAVY []" in result.stderr, result.stderr


def test_inspect_prints_schema_counts_units_config_and_seed(by_hand):
    result = pipeline("inspect", str(by_hand["tracks"]))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "schema:          track_jets version 1" in out
    assert "[events] 12 rows" in out
    assert "sample:          mini" in out and "shard:           1" in out
    assert "d0             f4  [mm]" in out
    assert "seed:" in out and "config_hash:" in out
    assert "process: ttbar" in out  # the stored config


def test_generate_rejects_shard_out_of_range(by_hand, tmp_path):
    result = pipeline("generate", "--config", str(by_hand["config"]), "--sample", "mini",
                      "--shard", "2", "--output", str(tmp_path / "x.h5"))
    assert result.returncode == 2
    assert "shard 2 out of range" in result.stderr and "2 shards" in result.stderr
    assert not (tmp_path / "x.h5").exists()


def test_generate_rejects_unknown_sample(by_hand, tmp_path):
    result = pipeline("generate", "--config", str(by_hand["config"]), "--sample", "zjets",
                      "--shard", "0", "--output", str(tmp_path / "x.h5"))
    assert result.returncode == 2
    assert "unknown sample 'zjets'" in result.stderr and "mini" in result.stderr


def test_tracker_refuses_a_file_of_the_wrong_stage(by_hand, tmp_path):
    result = pipeline("simulate-tracker", "--config", str(by_hand["config"]),
                      "--input", str(by_hand["tracks"]), "--output", str(tmp_path / "y.h5"))
    assert result.returncode == 2
    assert str(by_hand["tracks"]) in result.stderr
    assert "holds schema 'track_jets', expected 'particle_jets'" in result.stderr
    assert not (tmp_path / "y.h5").exists()


def test_config_command_reports_bad_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"samples": {"s": {"process": "ttbar", "shards": -1}}, "trackr": {}}))
    result = pipeline("config", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "samples.s.shards: -1 is less than the minimum of 1" in result.stderr
    assert "'trackr' was unexpected" in result.stderr


def test_config_command_prints_defaults(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(CONFIG))
    result = pipeline("config", str(good))
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["tracker"]["bfield"] == 2.0
    assert resolved["samples"]["mini"]["jets"]["radius"] == 0.4


def test_split_and_plots_by_hand(by_hand):
    out = by_hand["dir"]
    result = pipeline("split", "--config", str(by_hand["config"]), "--sample", "mini",
                      "--inputs", str(by_hand["tracks"]), "--train", str(out / "train.h5"),
                      "--val", str(out / "val.h5"), "--test", str(out / "test.h5"))
    assert result.returncode == 0, result.stderr
    result = pipeline("plot-validation", "--inputs", str(out / "train.h5"), "--output-dir", str(out / "plots"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted([
        f"{name}.{ext}" for name in ("track_multiplicity", "d0_significance", "hadron_decay_length", "jet_pt")
        for ext in ("png", "pdf")
    ] + ["summary.md"])


def test_split_refuses_a_shard_of_another_sample(by_hand, tmp_path):
    two_samples = tmp_path / "two.yaml"
    two_samples.write_text(yaml.safe_dump(
        {**CONFIG, "samples": {**CONFIG["samples"], "other": CONFIG["samples"]["mini"]}}))
    outputs = tmp_path / "out"
    result = pipeline("split", "--config", str(two_samples), "--sample", "other",
                      "--inputs", str(by_hand["tracks"]), "--train", str(outputs / "a.h5"),
                      "--val", str(outputs / "b.h5"), "--test", str(outputs / "c.h5"))
    assert result.returncode == 2
    assert f"{by_hand['tracks']}: holds sample 'mini', expected 'other'" in result.stderr
    assert list(outputs.iterdir()) == []  # no partial outputs, no temporary files


@pytest.mark.parametrize("setting, message", [
    ("PhaseSpace:pTHatMinn = 20", "Pythia rejected the setting 'PhaseSpace:pTHatMinn = 20'"),
    # Pythia accepts "maybe" for a flag and reads it as off: without the check this runs.
    ("Top:gg2ttbar = maybe", "{config}: invalid configuration:\n  samples.mini.pythia_settings: "
                             "'Top:gg2ttbar = maybe': Top:gg2ttbar is a flag: expected on or off"),
], ids=["unknown key", "misread value"])
def test_generate_refuses_a_setting_pythia_rejects_or_would_misread(tmp_path, setting, message):
    config = tmp_path / "config.yaml"
    sample = {**CONFIG["samples"]["mini"], "pythia_settings": [setting]}
    config.write_text(yaml.safe_dump({**CONFIG, "samples": {"mini": sample}}))
    result = pipeline("generate", "--config", str(config), "--sample", "mini", "--shard", "0",
                      "--output", str(tmp_path / "gen.h5"))
    assert result.returncode == 2
    assert message.format(config=config) in result.stderr
    assert not (tmp_path / "gen.h5").exists()


def test_named_paths_group_repeats_and_refuse_them_where_one_is_expected():
    from pipeline.commands import named_path_lists, named_paths

    items = ["rnn=a.ckpt", "avr=b.ckpt", "rnn=c.ckpt"]
    assert named_path_lists(items, "--checkpoint") == {"rnn": [Path("a.ckpt"), Path("c.ckpt")], "avr": [Path("b.ckpt")]}
    with pytest.raises(ValueError, match="--checkpoint: rnn given more than once"):
        named_paths(items, "--checkpoint")
    with pytest.raises(ValueError, match=r"--edges 'rnn': expected NAME=PATH"):
        named_paths(["rnn"], "--edges")
