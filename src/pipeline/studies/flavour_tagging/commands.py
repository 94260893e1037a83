"""``pipeline flavour_tagging ...``: the flavour-tagging study's sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import (
    add_command,
    config_argument,
    evaluation_arguments,
    logged_config,
    named_path_lists,
    named_paths,
    split_arguments,
    split_paths,
    training_arguments,
)
from pipeline.studies.flavour_tagging.methods import METHODS
from pipeline.studies.vertexing.methods import METHODS as VERTEX_FINDERS

log = logging.getLogger(__name__)


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _score_edges(args) -> None:
    from pipeline.ml.checkpoints import checkpoint_run_id
    from pipeline.studies.flavour_tagging.edges import classical_finder_run, score_edges

    config = logged_config(args.config)
    run_id = (checkpoint_run_id(args.checkpoint) if args.checkpoint
              else classical_finder_run(config, args.method, split_paths(args).values()))
    counts = score_edges(config, args.method,
                         split_paths(args), split_paths(args, "out-"),
                         checkpoint=args.checkpoint, run_id=run_id)
    log.info("jets scored per split: %s", counts)


def _train(args) -> None:
    from pipeline.studies.flavour_tagging.train import train_flavour_tagger

    edges = None
    if args.edges_train or args.edges_val:
        if not (args.edges_train and args.edges_val):
            raise ValueError("--edges-train and --edges-val go together")
        edges = {"train": args.edges_train, "val": args.edges_val}
    train_flavour_tagger(logged_config(args.config), args.method, {"train": args.train, "val": args.val}, edges,
                         args.checkpoint, args.history, progress=not args.quiet, replica=args.replica)


def _evaluate(args) -> None:
    from pipeline.studies.flavour_tagging.evaluate import evaluate_flavour_tagging

    evaluate_flavour_tagging(logged_config(args.config), args.test, named_path_lists(args.checkpoint, "--checkpoint"),
                             named_paths(args.edges, "--edges"), args.output_dir)


def register(sub) -> None:
    p = add_command(sub, "score-edges", _score_edges,
                    "Write a frozen vertex finder's same-vertex edge scores for the track_graphs splits "
                    "(the flavour tagger's input).")
    config_argument(p)
    p.add_argument("--method", required=True, choices=VERTEX_FINDERS, help="the vertex finder whose edges to score")
    p.add_argument("--checkpoint", type=Path, help="the learned finder's checkpoint (not for avr, baseline)")
    split_arguments(p, "track_graphs file")
    split_arguments(p, "vertex_edges file to write", prefix="out-")

    p = add_command(sub, "train", _train,
                    "Train the b / c / light graph tagger on one vertex finder's edges (or none: no_vertex).")
    training_arguments(p, METHODS, "track_graphs")
    p.add_argument("--edges-train", type=Path, help="vertex_edges of the training file (not for no_vertex)")
    p.add_argument("--edges-val", type=Path, help="vertex_edges of the validation file (not for no_vertex)")
    p.add_argument("--replica", type=int, default=0,
                   help="which of the flavour_tagging.seeds trainings (0, 1, ...) this is")

    p = add_command(sub, "evaluate", _evaluate,
                    "Evaluate the flavour taggers on the test jets: metrics.csv, the lecture-style table, ROC and "
                    "confusion figures; logs to MLflow.")
    evaluation_arguments(p, "track_graphs", "a tagger's checkpoint (repeat for no_vertex and every vertex finder, "
                                            "and for every replica: the table quotes their mean)")
    p.add_argument("--edges", required=True, action="append", metavar="METHOD=PATH",
                   help="a vertex finder's test vertex_edges file (repeat for every finder)")
