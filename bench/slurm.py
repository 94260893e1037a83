"""The tiny DAG on local cores against the same DAG through Slurm.

    python bench/slurm.py [--only local|slurm] [--keep DIR]

Runs the whole default DAG on ``.test/config/config.yaml`` (the tests' tiny end-to-end
config: 60 ttbar, 80 top and 80 QCD events, small networks, two epochs)
twice from scratch, each in a new directory:

1. local: ``snakemake --cores 2`` (the default profile);
2. slurm: ``snakemake --profile profiles/slurm-ci``, every job an sbatch job on the
   running Slurm (``tests/slurm/start-single-node.sh`` makes a one-node one).

For each it prints the wall time, the number of jobs, the summed run time of the jobs
themselves (Snakemake's benchmark files) and the wall time per job. The difference is
the cost of going through a scheduler: submission, the job's own Snakemake start, and
the status polling.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.tiny import TINY_WORKFLOW_CONFIG

REPO = Path(__file__).resolve().parents[1]


def run(kind: str, directory: Path) -> dict[str, float]:
    where = ["--cores", "2"] if kind == "local" else ["--profile", str(REPO / "workflow" / "profiles" / "slurm-ci")]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(directory), *where, "--configfile", str(TINY_WORKFLOW_CONFIG)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{kind} run failed:\n{result.stderr[-4000:]}")
    job_seconds = []
    for tsv in (directory / "logs" / "benchmarks").rglob("*.tsv"):
        with open(tsv) as f:
            job_seconds.append(float(next(csv.DictReader(f, delimiter="\t"))["s"]))
    return {"wall_s": wall, "jobs": len(job_seconds), "job_s": sum(job_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["local", "slurm"])
    parser.add_argument("--keep", type=Path, help="run in DIR/<kind> and keep the results")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["local", "slurm"]
    if "slurm" in kinds and shutil.which("sbatch") is None:
        sys.exit("no Slurm here (sbatch not on PATH); start one with tests/slurm/start-single-node.sh")
    for kind in kinds:
        with tempfile.TemporaryDirectory() as scratch:
            directory = (args.keep or Path(scratch)) / kind
            directory.mkdir(parents=True, exist_ok=True)
            numbers = run(kind, directory)
        print(f"{kind:>5}: {numbers['wall_s']:6.0f} s wall for {numbers['jobs']} jobs "
              f"({numbers['wall_s'] / numbers['jobs']:.1f} s per job); the jobs themselves ran "
              f"{numbers['job_s']:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
