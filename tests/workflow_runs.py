"""Running the workflow from the tests: Snakemake in a subprocess, on a config written to
the run's directory (a real run, not a mock)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Snakemake's own job-rate limit instead of the default profile's 10 s span, whose last timer
# holds Snakemake's exit up to 10 s: ~4 minutes over the suite's runs of a few tiny jobs each.
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
             "--max-jobs-per-timespan", "100/1s"]


def snakemake_env() -> dict[str, str]:
    """The environment of a Snakemake run: jobs call `python -m pipeline`, so the
    interpreter running the tests comes first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, PYTHONUNBUFFERED="1")


def run_snakemake(workdir: Path, *args: str, check: bool = True, cores: str | None = "2",
                  timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Snakemake on ``workdir`` with ``args``, on local cores (``cores``) or, with
    ``cores=None``, as the args say (a profile's executor); started in ``cwd`` (default:
    the tests' own working directory), against which relative paths in ``args`` resolve."""
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *(["--cores", cores] if cores else []), *args],
        capture_output=True, text=True, env=snakemake_env(), timeout=timeout, cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """{rule: number of jobs} from the 'Job stats' table Snakemake prints."""
    table = output.split("Job stats:")[-1].splitlines()
    counts = {}
    for line in table[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for a test's server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
