"""The paper-size configurations (workflow/configs/paper/<study>.yaml, docs/paper_configs.md):
each validates, makes the paper's number of jets (events) from its events per shard, shards and
split with the examples per event measured by bench/paper_resources.py (recorded in the
resources file beside it), trains on GPUs, plans its study's training jobs in a dry run, and
has its job resources estimated."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.run_config import load_config
from pipeline.studies import active_studies, study

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "workflow" / "configs" / "paper"
CONFIGS = sorted(p for p in PAPER.glob("*.yaml") if not p.name.endswith(".resources.yaml"))

#: The papers' numbers (the configs' headers, docs/paper_configs.md): {study: [(samples, quantity,
#: number)]}, quantity "<split>_examples" (jets, or events' images) over those samples together,
#: or "events".
TARGETS = {
    # Shlomi et al., EPJC 81 (2021) 540: about 0.5M training jets; the test set ~181k jets.
    "vertexing": [(("ttbar",), "train_examples", 500_000), (("ttbar",), "test_examples", 181_000)],
    # The top-tagging reference data set: 1.2M / 400k / 400k jets, top and QCD equal in number.
    "jet_images": [(("top", "qcd"), "train_examples", 1_200_000), (("top", "qcd"), "val_examples", 400_000),
                   (("top", "qcd"), "test_examples", 400_000), (("top",), "examples", 1_000_000),
                   (("qcd",), "examples", 1_000_000)],
    # Di Bello et al., EPJC 81 (2021) 107, the authors' code: 4 energy ranges x 100k events, 70 / 20 / 10.
    "particle_flow": [(("pflow",), "events", 400_000), (("pflow",), "train_examples", 280_000),
                      (("pflow",), "val_examples", 80_000), (("pflow",), "test_examples", 40_000)],
    # Its super-resolution CNN, the authors' code: the same files.
    "super_resolution": [(("pflow",), "events", 400_000), (("pflow",), "train_examples", 280_000),
                         (("pflow",), "val_examples", 80_000), (("pflow",), "test_examples", 40_000)],
}
#: Whole shards: the configs' headers promise 1 %.
TOLERANCE = 0.01
#: The studies each configuration runs: flavour tagging rides on the vertexing jets.
RUNS = {"vertexing": {"vertexing", "flavour_tagging"}, "jet_images": {"jet_images"},
        "particle_flow": {"particle_flow"}, "super_resolution": {"super_resolution"}}


def resources(config_path: Path) -> dict:
    return yaml.safe_load(config_path.with_suffix(".resources.yaml").read_text())


def expected(config: dict, measured: dict, samples, quantity: str) -> float:
    """``quantity`` of ``samples`` from the config's counts and split and the measured rates."""
    total = 0.0
    for sample in samples:
        s = config["samples"][sample]
        events = s["events_per_shard"] * s["shards"]
        if quantity == "events":
            total += events
            continue
        examples = events * measured["samples"][sample]["examples_per_event"]
        total += examples if quantity == "examples" else examples * config["split"][quantity.split("_")[0]]
    return total


def dry_run(tmp_path: Path, *configs: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path), "--configfile",
                           *map(str, configs)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_one_config_per_study_with_a_published_size():
    assert {p.stem for p in CONFIGS} == set(TARGETS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_validates_and_trains_on_gpus(path):
    config = load_config(path)
    training = config["training"]
    assert (training["accelerator"], training["devices"], training["num_nodes"], training["launcher"]) == \
        ("gpu", 4, 1, "srun")
    assert {s.name for s in active_studies(config)} == RUNS[path.stem]
    header = path.read_text().split("\nseed:")[0]
    assert "batch_size x devices x num_nodes" in header
    assert "--profile profiles/slurm" in header


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_counts_are_the_papers(path):
    config, measured = load_config(path), resources(path)
    for sample, recorded in measured["counts"].items():
        # The resources were estimated for this file's counts (else: bench/paper_resources.py --reuse).
        s = config["samples"][sample]
        assert (recorded["events_per_shard"], recorded["shards"]) == (s["events_per_shard"], s["shards"]), sample
        assert recorded["examples_per_event"] == measured["measurements"]["samples"][sample]["examples_per_event"]
    for samples, quantity, number in TARGETS[path.stem]:
        got = expected(config, measured["measurements"], samples, quantity)
        assert abs(got / number - 1) <= TOLERANCE, f"{samples} {quantity}: {got:,.0f}, the paper's {number:,}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_dry_run_plans_the_trainings(path, tmp_path):
    config = load_config(path)
    jobs = job_counts(dry_run(tmp_path, path))
    for name in RUNS[path.stem]:
        descriptor = study(name)
        planned = descriptor.jobs(config)
        assert jobs[descriptor.training_rule] == planned[descriptor.training_rule] > 0
    others = {s.name for s in active_studies(load_config(ROOT / "config.yaml"))} - RUNS[path.stem]
    assert not [rule for rule in jobs if any(rule.endswith("_" + other) for other in others)]


def test_calorimeter_configs_merge(tmp_path):
    """particle_flow.yaml then super_resolution.yaml: both studies, the downstream comparison included."""
    paths = [PAPER / "particle_flow.yaml", PAPER / "super_resolution.yaml"]
    first, second = (yaml.safe_load(p.read_text()) for p in paths)
    for key in ("split", "training", "seed"):
        assert first[key] == second[key], key
    assert first["samples"]["pflow"] == second["samples"]["pflow"]
    jobs = job_counts(dry_run(tmp_path, *paths))
    assert jobs["train_particle_flow"] == 3 and jobs["train_super_resolution"] == 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_resources_estimated(path):
    config = load_config(path)
    text = path.with_suffix(".resources.yaml").read_text()
    assert "GPU RUNTIMES ARE NOT MEASURED" in text and "MEASURED ON A" in text
    estimated = resources(path)
    assert estimated["measured_on"]["gpu"] == "none" and estimated["measured_on"]["date"]
    jobs = estimated["jobs"]
    gpus = config["training"]["devices"] * config["training"]["num_nodes"]
    for name in RUNS[path.stem]:
        trainings = {k: v for k, v in jobs.items() if k.startswith(study(name).training_rule + "[")}
        assert trainings, name
        for key, job in trainings.items():
            assert job["gpus"] == gpus, key
            assert job["mem_mb"] > 0 and job["cpu_hours"] > 0, key
            assert job["runtime_min"]["cpu_one_thread_at_max_epochs"] > 0, key
            assert "not measured" in job["runtime_min"]["gpu"], key
    for key, job in jobs.items():
        assert job["mem_mb"] > 0 and job["jobs"] > 0, key
