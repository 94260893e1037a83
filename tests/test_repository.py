"""The repository keeps its promises: CI runs exactly the README's test command."""

from pathlib import Path

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
    workflow_schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    package_schema = REPO / "src" / "pipeline" / "schemas" / "config.schema.yaml"
    assert workflow_schema.read_text() == package_schema.read_text()


def test_shipped_configs_are_valid():
    from pipeline.config import load_config

    configs = [REPO / "config.yaml", *sorted((REPO / "workflow" / "configs").glob("*.yaml"))]
    assert len(configs) >= 2
    for path in configs:
        load_config(path)  # raises ConfigError naming the file and key
