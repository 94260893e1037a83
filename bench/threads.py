"""How many torch threads a training should take on a 2-core machine: one training on two
threads against two trainings side by side on one thread each.

    python bench/threads.py [--run .] [--epochs 1] [JOB ...]

JOB is a training job of a finished run, named as its log under logs/ (default: the run's
vertex finders, particle-flow and super-resolution networks and the jet-image CNN, e.g.
``vertexing/train_rnn``). The job's command is read from Snakemake's metadata
(``.snakemake/metadata``) and run again on the run's data for ``--epochs`` epochs, its
outputs, its MLflow store and its resume directory in a temporary directory (the run is
not touched): once alone with ``training.threads: 2``, then twice at the same time with
``training.threads: 1``. Printed: the wall time of each and the ratio ``2 x alone / side by
side``, the work two cores get done with one-thread trainings for each unit with two-thread
ones (above 1: one thread is better whenever a second training is ready to run beside it).
Both include the job's start-up (imports, MLflow), as the workflow's jobs do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

DEFAULT_JOBS = ["vertexing/train_rnn", "vertexing/train_set2graph", "vertexing/train_track_pair",
                "particle_flow/train_cnn", "particle_flow/train_graph", "super_resolution/train_redistribute",
                "super_resolution/train_cnn", "jet_images/train_cnn"]


def job_commands(run: Path) -> dict[str, str]:
    """job (its log path under logs/, without .log) -> the shell command Snakemake ran."""
    commands = {}
    for path in (run / ".snakemake" / "metadata").iterdir():
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        for log in record.get("log") or []:
            if log.startswith("logs/") and log.endswith(".log") and record.get("shellcmd"):
                commands[log[len("logs/"):-len(".log")]] = record["shellcmd"]
    return commands


def prepared(command: str, workdir: Path, tag: str, threads: int, epochs: int) -> list[str]:
    """The job's command with its config's threads and epochs set, every output in ``workdir``."""
    words = shlex.split(command.split(" 2> ")[0])
    if "train" not in words:
        raise SystemExit(f"{command!r} is not a training command")
    study = words[words.index("-m") + 2]
    config_path = words[words.index("--config") + 1]
    config = yaml.safe_load(Path(config_path).read_text())
    overrides = [config["training"]] + ([config[study]["training"]] if "training" in config.get(study, {}) else [])
    for section in overrides:
        section.update(threads=threads, max_epochs=epochs)
    config["training"]["resume_dir"] = str(workdir / f"resume_{tag}")
    config["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / f'mlflow_{tag}.db'}"
    new_config = workdir / f"{tag}.yaml"
    new_config.write_text(yaml.safe_dump(config, sort_keys=False))
    words[words.index("--config") + 1] = str(new_config)
    for flag in ("--checkpoint", "--history"):
        words[words.index(flag) + 1] = str(workdir / f"{tag}{flag.replace('--', '.')}")
    return words


def timed(commands: list[list[str]], workdir: Path, threads: int) -> float:
    """Wall time [s] of the commands started together; each one's stderr in workdir."""
    start = time.perf_counter()
    processes = []
    for k, words in enumerate(commands):
        with open(workdir / f"stderr_{threads}_{k}.log", "w") as stderr:
            processes.append(subprocess.Popen(words, stderr=stderr, stdout=subprocess.DEVNULL,
                                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}))
    for words, process in zip(commands, processes):
        if process.wait():
            raise SystemExit(f"{shlex.join(words)} failed (exit {process.returncode}); its log is in {workdir}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", nargs="*", default=DEFAULT_JOBS)
    parser.add_argument("--run", type=Path, default=Path("."), help="the directory of a finished run")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    commands = job_commands(args.run)
    missing = [job for job in args.jobs if job not in commands]
    if missing:
        raise SystemExit(f"{args.run}: no finished job {missing} in .snakemake/metadata; "
                         f"training jobs there: {sorted(j for j in commands if re.search(r'/train_', j))}")
    os.chdir(args.run)
    print(f"{args.epochs} epoch(s) per training, start-up included")
    print("job  two threads alone [s]  two one-thread side by side [s]  ratio")
    for job in args.jobs:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            alone = timed([prepared(commands[job], workdir, "alone", 2, args.epochs)], workdir, 2)
            pair = timed([prepared(commands[job], workdir, f"pair{k}", 1, args.epochs) for k in range(2)], workdir, 1)
        print(f"{job}  {alone:.1f}  {pair:.1f}  {2 * alone / pair:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
