"""The study contract (pipeline.studies.descriptor.Study): every registered study keeps it,
and a new study is picked up by the DAG, the CLI, the report and the config validation from
its own files and one registry line, with no other file edited."""

from __future__ import annotations

import ast
import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from workflow_runs import REPO, job_counts

from pipeline.commands import add_command
from pipeline.studies import STUDIES, registered, study_module
from pipeline.tiny import tiny_workflow_config

# A rule file may define some rules only for some configs (the jet images: the calorimeter
# chain or the reference data set's conversion), indented under an `if`.
RULE = re.compile(r"^\s*rule (\w+):", re.M)


def cli_steps(name: str) -> list[str]:
    """The CLI steps of a study, as ``pipeline <name> --help`` lists them."""
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    study_module(name, "commands").register(sub)
    return list(sub.choices)


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_is_one_name_everywhere(name):
    study = next(s for s in registered() if s.name == name)
    methods = study_module(name, "methods")
    assert (study.methods, study.learned) == (methods.METHODS, methods.LEARNED)
    # Its rules are <step>_<study>, exactly the CLI's steps: every step runs by hand as its rule runs it.
    rules = RULE.findall((REPO / "workflow" / "rules" / f"{name}.smk").read_text())
    assert sorted(rules) == sorted(study.rule(step) for step in cli_steps(name))
    assert name in yaml.safe_load((REPO / "src" / "pipeline" / "schemas" / "config.schema.yaml").read_text())["properties"]
    assert (REPO / "workflow" / "report" / f"{name}.rst").exists()  # its line on the report's front page
    assert all(required in STUDIES[:STUDIES.index(name)] for required in study.requires)


def test_a_rule_name_comes_from_the_study_and_the_step():
    vertexing = next(s for s in registered() if s.name == "vertexing")
    assert vertexing.rule("build-graphs") == "build_graphs_vertexing"
    assert vertexing.training_rule == "train_vertexing"


def test_descriptors_import_neither_torch_nor_lightning():
    code = ("import sys; from pipeline.studies import registered; from pipeline.run_config import load_config; "
            "registered(); load_config(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "config.yaml")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_no_profile_names_a_rule():
    """Resources are the rules' own and partitions are chosen by what a job asks for, so a new
    study's rules need no line in any profile."""
    for profile in (REPO / "workflow" / "profiles").glob("*/config.yaml"):
        settings = yaml.safe_load(profile.read_text())
        assert not {"set-resources", "set-threads", "set-resource-scopes"} & set(settings), profile


def test_study_commands_get_their_rule_from_the_cli():
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["flavour_tagging", "score-edges", "--config", "c.yaml", "--method", "avr",
                                      *(f"--{p}{s}=x" for p in ("", "out-") for s in ("train", "val", "test"))])
    assert (args.command, args.rule) == ("flavour_tagging score-edges", "score_edges_flavour_tagging")
    import argparse

    plain = add_command(argparse.ArgumentParser().add_subparsers(), "x", print, "help").parse_args([])
    assert plain.rule is None  # the simulation's commands are no study's step


# --- a new study, from its own files only ------------------------------------------------

DESCRIPTOR = '''
"""The energy of a particle gun's particles: the smallest study, to show the contract."""

from pipeline.studies.descriptor import Study, present


def _check(config):
    name = config["gun_energy"]["sample"]
    if name in config["samples"] and config["samples"][name]["process"] != "particle_gun":
        raise ValueError(f"gun_energy.sample: {name!r} is not a particle gun; expected a particle_gun sample")


STUDY = Study(
    name="gun_energy",
    summary="the summed energy of a gun's particles per shard",
    methods=("sum",),
    learned=(),
    samples=lambda config: present(config, config["gun_energy"]["sample"]),
    outputs=lambda config: ["results/gun_energy/energy.csv"],
    jobs=lambda config: {"sum_gun_energy": 1},
    runs=lambda config: [],
    check=_check,
)
'''
METHODS = 'METHODS = ("sum",)\nLEARNED = ()\n'
COMMANDS = '''
from pathlib import Path

from pipeline.commands import add_command, config_argument


def _sum(args):
    from pipeline.io.hdf5 import RaggedReader
    from pipeline.io.outputs import write_csv
    from pipeline.run_config import load_config
    from pipeline.simulation.formats import GUN_EVENTS

    load_config(args.config)
    rows = []
    for path in args.inputs:
        with RaggedReader(path, GUN_EVENTS) as reader:
            energy = reader.read("primaries", ["energy"])["energy"]
            rows.append({"file": Path(path).name, "events": reader.n_rows("events"), "energy": float(energy.sum())})
    write_csv(args.output, ["file", "events", "energy"], rows)


def register(sub):
    p = add_command(sub, "sum", _sum, "Sum the gun particles' energy of each shard.")
    config_argument(p)
    p.add_argument("--inputs", nargs="+", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
'''
RULES = '''
GUN_ENERGY_SAMPLE = config["gun_energy"]["sample"]


rule sum_gun_energy:
    input:
        sample_shard_files(GUN_ENERGY_SAMPLE, "generated"),
    output:
        "results/gun_energy/energy.csv",
    params:
        config=study_config_file("gun_energy", [GUN_ENERGY_SAMPLE], "gun_energy"),
    log:
        "logs/gun_energy/sum.log",
    benchmark:
        "logs/benchmarks/gun_energy/sum.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline gun_energy sum --config {params.config} --inputs {input} --output {output} 2> {log}"
'''
REPORT_LINE = '- **gun_energy**: the energy of ``{{ snakemake.config["gun_energy"]["sample"] }}``\'s particles.\n'
SCHEMA_SECTION = '''  gun_energy:
    description: The smallest study, to show the contract.
    type: object
    additionalProperties: false
    default: {}
    properties:
      sample:
        description: The particle-gun sample whose energy is summed.
        type: string
        default: pi0
'''


@pytest.fixture(scope="module")
def tree_with_a_new_study(tmp_path_factory):
    """A copy of the repository with the study gun_energy added as CONTRIBUTING.md says: its
    package, rule file, report line, schema section and one entry in the registry."""
    tree = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "workflow"):
        shutil.copytree(REPO / name, tree / name, ignore=ignore, symlinks=True)
    shutil.copy(REPO / "Snakefile", tree / "Snakefile")
    package = tree / "src" / "pipeline" / "studies" / "gun_energy"
    package.mkdir()
    for name, text in {"__init__.py": DESCRIPTOR, "methods.py": METHODS, "commands.py": COMMANDS}.items():
        (package / name).write_text(textwrap.dedent(text).lstrip())
    (tree / "workflow" / "rules" / "gun_energy.smk").write_text(textwrap.dedent(RULES).lstrip())
    (tree / "workflow" / "report" / "gun_energy.rst").write_text(REPORT_LINE)
    schema = tree / "src" / "pipeline" / "schemas" / "config.schema.yaml"
    text = schema.read_text()
    assert text.count("\nproperties:\n") == 1
    schema.write_text(text.replace("\nproperties:\n", "\nproperties:\n" + SCHEMA_SECTION, 1))
    registry = tree / "src" / "pipeline" / "studies" / "__init__.py"
    text = registry.read_text()
    last = f'"{STUDIES[-1]}")'  # the registry's closing line: the new study goes last
    assert last in text
    registry.write_text(text.replace(last, f'"{STUDIES[-1]}", "gun_energy")', 1))
    return tree


def in_tree(tree, *command, check=True):
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def gun_only_config(tree, **section) -> str:
    """The tiny configuration's pi0 gun alone: no other study runs."""
    tiny = tiny_workflow_config()
    config = {"seed": 3, "samples": {"pi0": tiny["samples"]["pi0"]}, "gun_energy": section}
    path = tree / "gun_energy.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_a_new_study_runs_from_its_own_files(tree_with_a_new_study):
    tree = tree_with_a_new_study
    # The CLI: its group and step.
    help_text = in_tree(tree, sys.executable, "-m", "pipeline", "--help").stdout
    assert "gun_energy" in help_text and "the summed energy of a gun's particles per shard" in help_text
    # The config validation: its schema section and its check, the file and the key named.
    bad = in_tree(tree, sys.executable, "-m", "pipeline", "config", gun_only_config(tree, sampel="pi0"), check=False)
    assert bad.returncode == 2 and "gun_energy" in bad.stderr and "sampel" in bad.stderr
    config = yaml.safe_load(open(gun_only_config(tree)))
    config["samples"]["ttbar"] = {"process": "ttbar"}
    config["gun_energy"] = {"sample": "ttbar"}
    (tree / "bad.yaml").write_text(yaml.safe_dump(config))
    bad = in_tree(tree, sys.executable, "-m", "pipeline", "config", str(tree / "bad.yaml"), check=False)
    assert bad.returncode == 2 and "gun_energy.sample: 'ttbar' is not a particle gun" in bad.stderr
    # The DAG: its rule, planned as its descriptor says, and run for real.
    path = gun_only_config(tree)
    plan = in_tree(tree, sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", path)
    assert job_counts(plan.stdout + plan.stderr) == {"generate": 1, "sum_gun_energy": 1, "all": 1, "total": 3}
    in_tree(tree, sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", path)
    with open(tree / "results" / "gun_energy" / "energy.csv") as f:
        rows = list(csv.DictReader(f))
    events = tiny_workflow_config()["samples"]["pi0"]["events_per_shard"]
    assert [r["events"] for r in rows] == [str(events)]
    assert 7.0 * events <= float(rows[0]["energy"]) <= 12.0 * events  # the gun's 7-12 GeV pi0s
    # The report's front page: its line, where the config runs it.
    page = (tree / ".snakemake" / "pipeline" / "report.rst").read_text()
    assert page.count("**gun_energy**") == 1 and "**vertexing**" not in page

    # Nothing else was edited: the copy differs from the repository in exactly these files.
    edited = set()
    for root in ("src", "workflow"):
        for path in (tree / root).rglob("*"):
            if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                original = REPO / path.relative_to(tree)
                if not original.exists() or original.read_bytes() != path.read_bytes():
                    edited.add(str(path.relative_to(tree)))
    assert edited == {"src/pipeline/studies/gun_energy/__init__.py", "src/pipeline/studies/gun_energy/methods.py",
                      "src/pipeline/studies/gun_energy/commands.py", "src/pipeline/studies/__init__.py",
                      "src/pipeline/schemas/config.schema.yaml", "workflow/rules/gun_energy.smk",
                      "workflow/report/gun_energy.rst"}


def test_the_contract_is_checked_by_parsing_not_by_importing_studies():
    # The registry itself names no study module: adding one is a line in STUDIES.
    tree = ast.parse((REPO / "src" / "pipeline" / "studies" / "__init__.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(module.startswith(tuple(f"pipeline.studies.{name}" for name in STUDIES)) for module in imported)
