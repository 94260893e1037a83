"""``pipeline learning_curves ...``: the learning curves' sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import add_command, config_argument, logged_config, named_paths, training_arguments
from pipeline.studies.learning_curves.methods import CURVED_STUDIES, METHODS

log = logging.getLogger(__name__)


def _keyed(items: list[str] | None, option: str, parts: int) -> dict[tuple, Path]:
    """{(name, fraction[, replica]): path} of repeated ``option NAME:FRACTION[:REPLICA]=PATH``."""
    found = {}
    for key, path in named_paths(items, option).items():
        fields = key.split(":")
        if len(fields) != parts:
            expected = "NAME:FRACTION:REPLICA" if parts == 3 else "NAME:FRACTION"
            raise ValueError(f"{option} {key}={path}: expected {expected}=PATH")
        found[(fields[0], float(fields[1]), *map(int, fields[2:]))] = path
    return found


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _subset(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.learning_curves.subsets import write_subset

    config = load_config(args.config)
    if args.study == "vertexing":
        from pipeline.studies.vertexing.formats import TRACK_GRAPHS as schema
    else:
        from pipeline.studies.jet_images.formats import jet_images_schema

        schema = jet_images_schema(config["jet_images"]["pixels"])
    jets = write_subset(config, args.study, schema, args.input, args.output, args.fraction)
    log.info("%d jets in the %g subset of %s", jets, args.fraction, args.input)


def _train(args) -> None:
    from pipeline.studies.learning_curves.train import train_point

    train_point(logged_config(args.config), args.method, args.fraction, args.replica, args.train, args.val,
                args.checkpoint, args.history, progress=not args.quiet)


def _evaluate(args) -> None:
    from pipeline.studies.learning_curves.evaluate import evaluate_curves

    evaluate_curves(logged_config(args.config), _keyed(args.checkpoint, "--checkpoint", 3),
                    _keyed(args.subset, "--subset", 2), named_paths(args.test, "--test"), args.output_dir)


def register(sub) -> None:
    p = add_command(sub, "subset", _subset,
                    "Write the nested, seeded subset of a study's training file that one point of its learning "
                    "curve trains on (the same format and attributes, the rows in file order).")
    config_argument(p)
    p.add_argument("--study", required=True, choices=list(CURVED_STUDIES))
    p.add_argument("--fraction", required=True, type=float, help="of the training jets, in (0, 1]")
    p.add_argument("--input", required=True, type=Path, help="the study's training file")
    p.add_argument("--output", required=True, type=Path, help="the subset file to write")

    p = add_command(sub, "train", _train,
                    "Train one point of a learning curve: a study's network on a training subset, with the seed of "
                    "one replica; logs learning_curves.train.<method> to MLflow.")
    training_arguments(p, METHODS, "study's (subset)")
    p.add_argument("--fraction", required=True, type=float, help="the point's fraction (learning_curves.fractions)")
    p.add_argument("--replica", required=True, type=int, help="0 .. learning_curves.seeds - 1")

    p = add_command(sub, "evaluate", _evaluate,
                    "Every point's network on its study's test file: curve.csv, curve.md and a figure per study, "
                    "with the papers' numbers and a fitted law; logs to MLflow.")
    config_argument(p)
    p.add_argument("--checkpoint", required=True, action="append", metavar="METHOD:FRACTION:REPLICA=PATH")
    p.add_argument("--subset", required=True, action="append", metavar="STUDY:FRACTION=PATH",
                   help="the training subset of each point (its jets are the point's size)")
    p.add_argument("--test", required=True, action="append", metavar="STUDY=PATH", help="the study's test file")
    p.add_argument("--output-dir", required=True, type=Path)
