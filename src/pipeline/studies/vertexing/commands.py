"""``pipeline vertexing ...``: the vertexing study's sub-commands."""

from __future__ import annotations

import logging

from pipeline.commands import (
    add_command,
    config_argument,
    evaluation_arguments,
    logged_config,
    named_paths,
    split_arguments,
    split_paths,
    training_arguments,
)
from pipeline.studies.vertexing.methods import LEARNED

log = logging.getLogger(__name__)


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _build_graphs(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.vertexing.features import build_track_graphs

    counts = build_track_graphs(load_config(args.config), args.sample,
                                split_paths(args), split_paths(args, "out-"))
    log.info("jets per split: %s", counts)


def _train(args) -> None:
    from pipeline.studies.vertexing.train import train_vertex_finder

    train_vertex_finder(logged_config(args.config), args.method, args.train, args.val,
                        args.checkpoint, args.history, progress=not args.quiet)


def _evaluate(args) -> None:
    from pipeline.studies.vertexing.evaluate import evaluate_vertexing

    evaluate_vertexing(logged_config(args.config), args.test, named_paths(args.checkpoint, "--checkpoint"),
                       args.output_dir)


def register(sub) -> None:
    p = add_command(sub, "build-graphs", _build_graphs,
                    "Turn a sample's train/val/test track_jets files (for a set2graph file sample: the data "
                    "set's training_data.root, valid_data.root, test_data.root) into standardised track sets "
                    "(track_graphs files) for the vertex finders.")
    config_argument(p)
    p.add_argument("--sample", required=True)
    split_arguments(p, "track_jets file (or the Set2Graph data set's ROOT file)")
    split_arguments(p, "track_graphs file to write", prefix="out-")

    p = add_command(sub, "train", _train,
                    f"Train a learned vertex finder ({', '.join(LEARNED)}) with Lightning; logs to MLflow.")
    training_arguments(p, LEARNED, "track_graphs")

    p = add_command(sub, "evaluate", _evaluate,
                    "Evaluate AVR, the baseline, the learned vertex finders and the trivial partitions on "
                    "the test jets: metrics.csv, tables, figure, predictions.h5; logs to MLflow.")
    evaluation_arguments(p, "track_graphs",
                         f"a learned method's checkpoint (repeat for {', '.join(LEARNED)})")
