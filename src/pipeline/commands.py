"""What the sub-commands of ``pipeline`` share: their common arguments, ``METHOD=PATH``
lists, and the config of a command that logs to MLflow. The simulation and every study
register their sub-commands with these (``pipeline.cli`` builds the parser); nothing
here imports torch or Lightning, so ``pipeline --help`` and the simulation jobs stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence


def add_command(sub, name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
    """A sub-command ``name`` of ``sub`` (an argparse subparsers object) that runs ``func(args)``.
    A study's steps get, from ``pipeline.cli``, the name its errors give (``jet_images train``)
    and ``rule``, the workflow rule that runs it, which its MLflow runs are tagged with
    (Snakemake hands a job no name of its rule but ``{rule}`` in the shell command, which its
    linter refuses)."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=func, command=name, rule=None)
    return p


def config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path,
                   help="config YAML (validated against workflow/schemas/config.schema.yaml)")


def quiet_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def split_arguments(p: argparse.ArgumentParser, what: str, prefix: str = "") -> None:
    """--train, --val, --test (each after ``prefix``): a file per split."""
    for split in ("train", "val", "test"):
        p.add_argument(f"--{prefix}{split}", required=True, type=Path, help=f"{split} {what}")


def gun_shard_arguments(p: argparse.ArgumentParser, output: str) -> None:
    """The arguments of a per-shard step on a particle-gun shard: config, --generated, --output, --quiet."""
    config_argument(p)
    p.add_argument("--generated", required=True, type=Path, help="gun_events file of the shard")
    p.add_argument("--output", required=True, type=Path, help=f"{output} file to write")
    quiet_argument(p)


def sample_split_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """The arguments of a step splitting one sample's shards by event: config, --sample,
    --inputs (the shards), --train, --val, --test (``what`` files)."""
    config_argument(p)
    p.add_argument("--sample", required=True, help="the sample the shards belong to")
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help=f"{what} shard files")
    split_arguments(p, f"{what} file to write")


def split_paths(args, prefix: str = "") -> dict[str, Path]:
    """{split: path} of the arguments split_arguments added (``prefix`` as there, "out-" -> out_)."""
    attr = prefix.replace("-", "_")
    return {split: getattr(args, f"{attr}{split}") for split in ("train", "val", "test")}


def training_arguments(p: argparse.ArgumentParser, methods: Sequence[str], data: str, several: bool = False) -> None:
    """The arguments every training sub-command takes: config, method, data, outputs
    (``several``: --train and --val take one or more files each)."""
    config_argument(p)
    p.add_argument("--method", required=True, choices=list(methods))
    files = {"nargs": "+"} if several else {}
    s = "(s)" if several else ""
    p.add_argument("--train", required=True, type=Path, help=f"{data} training file{s}", **files)
    p.add_argument("--val", required=True, type=Path, help=f"{data} validation file{s}", **files)
    p.add_argument("--checkpoint", required=True, type=Path, help="best checkpoint to write (.ckpt)")
    p.add_argument("--history", required=True, type=Path, help="per-epoch metrics to write (.csv)")
    quiet_argument(p)


def evaluation_arguments(p: argparse.ArgumentParser, data: str, checkpoint_help: str) -> None:
    """The arguments every evaluation sub-command takes: config, test file, checkpoints, output."""
    config_argument(p)
    p.add_argument("--test", required=True, type=Path, help=f"{data} test file")
    p.add_argument("--checkpoint", required=True, action="append", metavar="METHOD=PATH", help=checkpoint_help)
    p.add_argument("--output-dir", required=True, type=Path)


def named_path_lists(items: list[str] | None, option: str) -> dict[str, list[Path]]:
    """{name: [paths]} of repeated ``option NAME=PATH`` arguments, in the order given."""
    paths: dict[str, list[Path]] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{option} {item!r}: expected NAME=PATH")
        paths.setdefault(name, []).append(Path(path))
    return paths


def named_paths(items: list[str] | None, option: str) -> dict[str, Path]:
    """{name: path} of repeated ``option NAME=PATH`` arguments, one per name."""
    paths = named_path_lists(items, option)
    repeated = sorted(name for name, found in paths.items() if len(found) > 1)
    if repeated:
        raise ValueError(f"{option}: {', '.join(repeated)} given more than once")
    return {name: found[0] for name, found in paths.items()}


def logged_config(path: Path) -> dict:
    """The config of a command that logs to MLflow, with its tracking store checked first:
    an SQLite store initialised, a tracking server answering, before any data is read."""
    from pipeline.ml.tracking import tracking_uri
    from pipeline.run_config import load_config

    config = load_config(path)
    tracking_uri(config["mlflow"])
    return config
