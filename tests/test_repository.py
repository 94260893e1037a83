"""The repository keeps its promises: CI runs exactly the README's test command."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_ci_starts_slurm_then_runs_the_readme_test_command():
    ci_commands = [
        line for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci_commands[0] == "bash tests/slurm/start-single-node.sh"
    assert len(ci_commands) == 2
    assert "python -m pytest" in ci_commands[1]
    assert f"```bash\n{ci_commands[1]}\n```" in (REPO / "README.md").read_text()


def test_workflow_schema_is_the_package_schema():
    """workflow/schemas/ (where the Snakemake catalog looks) holds a link to the schema the
    package validates with, not a copy that could drift."""
    from importlib import resources

    from pipeline.config import schema

    workflow_schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    package_schema = Path(str(resources.files("pipeline").joinpath("schemas/config.schema.yaml")))
    assert workflow_schema.is_symlink()
    assert workflow_schema.resolve() == package_schema.resolve()
    assert package_schema.resolve() == (REPO / "src" / "pipeline" / "schemas" / "config.schema.yaml").resolve()
    # ... and it parses to the schema validate_config uses: a JSON Schema of the config.
    parsed = yaml.safe_load(workflow_schema.read_text())
    assert parsed == schema()
    assert parsed["type"] == "object" and {"seed", "samples"} <= set(parsed["properties"])


def test_shipped_configs_are_valid():
    from pipeline.run_config import load_config

    configs = [REPO / "config.yaml", REPO / ".test" / "config" / "config.yaml",
               *sorted((REPO / "workflow" / "configs").glob("*.yaml"))]
    assert len(configs) >= 3
    for path in configs:
        load_config(path)  # raises ConfigError naming the file and key


def test_the_tiny_configuration_plans_every_rule_of_the_workflow(tmp_path):
    """`snakemake --configfile .test/config/config.yaml --directory <dir>`, from the
    repository root as a user types it, plans a job of every rule (the tiny run is the
    whole DAG), and as many of each as the file's samples ask for."""
    from workflow_runs import job_counts, run_snakemake

    from pipeline.tiny import TINY_WORKFLOW_CONFIG, tiny_workflow_config

    assert TINY_WORKFLOW_CONFIG == REPO / ".test" / "config" / "config.yaml"
    tiny = tiny_workflow_config()
    plan = run_snakemake(tmp_path, "-n", "--configfile", ".test/config/config.yaml", cwd=REPO)
    counts = job_counts(plan.stdout + plan.stderr)
    rules = run_snakemake(tmp_path, "--list-rules", "--configfile", ".test/config/config.yaml", cwd=REPO)
    every_rule = {line.strip() for line in rules.stdout.splitlines() if line.strip().isidentifier()}
    assert len(every_rule) > 10 and set(counts) - {"total"} == every_rule
    shards = {name: sample["shards"] for name, sample in tiny["samples"].items()}
    assert counts["generate"] == sum(shards.values())
    assert counts["simulate_tracker"] == shards["tiny"]
    assert counts["simulate_calorimeter"] == counts["build_jet_images"] == shards["top"] + shards["qcd"]


def test_the_plain_install_brings_what_the_documented_commands_need():
    # The README's first command installs `pipeline` without the test extra: what
    # `snakemake --report` imports (pygments, which Snakemake does not declare) must come with
    # it, not only with pytest.
    import re
    from importlib.metadata import distribution

    def requirements(name: str, seen: set[str]) -> set[str]:
        for requirement in distribution(name).requires or []:
            if "extra ==" in requirement:
                continue
            dependency = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")
            if dependency not in seen:
                seen.add(dependency)
                try:
                    requirements(dependency, seen)
                except Exception:  # a dependency for another platform, not installed here
                    pass
        return seen

    plain = requirements("pipeline", set())
    assert {"pygments", "snakemake", "mlflow", "torch"} <= plain
    assert "pytest" not in plain
