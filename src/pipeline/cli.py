"""The ``pipeline`` command: one sub-command per workflow step, each runnable by hand.

The simulation's steps are top-level sub-commands (``pipeline generate``); each study's
form the group of its name (``pipeline vertexing train``), registered by the study's own
``commands`` module, in the order of ``pipeline.studies.STUDIES``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from pipeline import __version__
from pipeline.allocator import retain_freed_memory
from pipeline.commands import add_command


def _inspect(args) -> None:
    print(describe_file(args.file, show_config=not args.no_config))


def _config(args) -> None:
    from pipeline.config import config_hash
    from pipeline.datasets import check_sources
    from pipeline.run_config import load_config
    from pipeline.simulation.checks import check_generators

    config = load_config(args.config)
    check_generators(config, source=str(args.config))
    check_sources(config, source=str(args.config))
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output:
        from pipeline.config import write_resolved_config

        write_resolved_config(config, args.output)
    print(f"# config hash {config_hash(config)}\n{text}", end="")


def describe_file(path: str | Path, show_config: bool = True) -> str:
    """A human-readable summary of a pipeline HDF5 file (schema, counts, units, provenance)."""
    from pipeline.inspect import file_schemas
    from pipeline.io.hdf5 import DataFileError, RaggedReader, file_schema

    path = Path(path)
    name = file_schema(path)
    schemas = file_schemas()
    if name not in schemas:
        raise DataFileError(f"{path}: not a pipeline file (schema {name!r}; known: {sorted(schemas)})")
    schema = schemas[name]
    lines = []
    with RaggedReader(path, schema) as reader:
        attrs = reader.attrs
        lines.append(f"file:            {path}")
        lines.append(f"schema:          {schema.name} version {attrs['schema_version']}  ({schema.description})")
        for key in ("package_version", "git_sha", "pythia_version", "sample", "shard", "split", "seed", "config_hash"):
            if key in attrs:
                lines.append(f"{key + ':':16} {attrs[key]}")
        for collection in schema.collections:
            parent = f", per {collection.parent}" if collection.parent else ""
            lines.append(f"\n[{collection.name}] {reader.n_rows(collection.name)} rows{parent}: {collection.description}")
            for fld in collection.fields:
                unit = f"[{fld.unit}]" if fld.unit else ""
                lines.append(f"  {fld.name:14} {fld.dtype:3} {unit:8} {fld.description}")
        if show_config:
            lines.append("\nconfig:")
            lines.append(yaml.safe_dump(reader.config, sort_keys=False).rstrip())
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.simulation import commands as simulation
    from pipeline.studies import registered, study_module

    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="From Pythia 8 events through a fast detector model to versioned HDF5, trained models and "
        "their evaluation (the steps of the Snakemake workflow, runnable by hand).",
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    simulation.register(sub)
    for study in registered():
        group = sub.add_parser(study.name, help=study.summary, description=f"The {study.name} study: {study.summary}.")
        study_sub = group.add_subparsers(dest="step", required=True, metavar="STEP")
        study_module(study.name, "commands").register(study_sub)
        for step, step_parser in study_sub.choices.items():
            # The rule that runs the step, which its MLflow runs are tagged with.
            step_parser.set_defaults(command=f"{study.name} {step}", rule=study.rule(step))

    p = add_command(sub, "inspect", _inspect, "Print a pipeline HDF5 file's schema version, counts, units, config and seed.")
    p.add_argument("file", type=Path)
    p.add_argument("--no-config", action="store_true", help="do not print the stored config")

    p = add_command(sub, "config", _config, "Validate a config file and print it with all defaults filled in.")
    p.add_argument("config", type=Path)
    p.add_argument("--output", type=Path, help="also write the resolved config here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help ends here, before the heavier imports
    retain_freed_memory()  # every step allocates and frees the same large arrays, batch after batch
    if args.rule:
        os.environ["PIPELINE_RULE"] = args.rule  # read by pipeline.ml.tracking.run_tags

    from pipeline.config import ConfigError
    from pipeline.io.hdf5 import DataFileError
    from pipeline.ml.tracking import TrackingServerError

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except (ConfigError, DataFileError, TrackingServerError, ValueError) as err:
        print(f"pipeline {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A full disk, a missing or unwritable path: the path and the cause, no traceback.
        if err.filename is None or err.strerror is None:
            message = str(err)
        else:
            target = "" if err.filename2 is None else f" -> {err.filename2}"
            message = f"{err.filename}{target}: {err.strerror}"
        print(f"pipeline {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
