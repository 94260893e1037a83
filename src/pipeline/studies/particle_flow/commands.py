"""``pipeline particle_flow ...``: the computer-vision particle-flow study's sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import (
    add_command,
    config_argument,
    evaluation_arguments,
    gun_shard_arguments,
    logged_config,
    named_paths,
    quiet_argument,
    sample_split_arguments,
    split_paths,
    training_arguments,
)
from pipeline.studies.particle_flow.methods import LEARNED

log = logging.getLogger(__name__)


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _build(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.particle_flow.images import build_image_shard

    rows = build_image_shard(load_config(args.config), args.generated, args.output, progress=not args.quiet)
    log.info("rows written: %s", rows)


def _split(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.simulation.split import split_sample
    from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES

    counts = split_sample(load_config(args.config), args.sample, args.inputs, split_paths(args),
                          PARTICLE_FLOW_IMAGES, ("split", "tracker", "calorimeter", "particle_flow"))
    log.info("events per split: %s", counts)


def _calibrate(args) -> None:
    from pipeline.studies.particle_flow.calibration import calibrate

    calibrate(logged_config(args.config), args.inputs, args.output, progress=not args.quiet)


def _train(args) -> None:
    from pipeline.studies.particle_flow.train import train_particle_flow

    train_particle_flow(logged_config(args.config), args.method, {"train": args.train, "val": args.val},
                        args.checkpoint, args.history, progress=not args.quiet)


def _evaluate(args) -> None:
    from pipeline.studies.particle_flow.evaluate import evaluate_particle_flow

    evaluate_particle_flow(logged_config(args.config), args.test, named_paths(args.checkpoint, "--checkpoint"),
                           args.templates, args.output_dir)


def register(sub) -> None:
    p = add_command(sub, "build", _build,
                    "Build the calorimeter images (detector and fine cells, truth, topo-clusters, the track) of one "
                    "particle-gun shard into a particle_flow_images HDF5 file.")
    gun_shard_arguments(p, "particle_flow_images")

    p = add_command(sub, "split", _split, "Merge a sample's particle_flow_images shards into train/val/test files, "
                    "by event.")
    sample_split_arguments(p, "particle_flow_images")

    p = add_command(sub, "calibrate", _calibrate,
                    "Measure the parametrised particle flow's templates (<E/p>, shower profiles) on single charged "
                    "pions; logs to MLflow.")
    config_argument(p)
    p.add_argument("--inputs", required=True, nargs="+", type=Path,
                   help="particle_flow_images files of the calibration sample")
    p.add_argument("--output", required=True, type=Path, help="templates JSON to write")
    quiet_argument(p)

    p = add_command(sub, "train", _train,
                    "Train a neutral-fraction network (cnn, graph, cnn_no_track) with Lightning; logs to MLflow.")
    training_arguments(p, LEARNED, "particle_flow_images")

    p = add_command(sub, "evaluate", _evaluate,
                    "Score the parametrised baseline and every network on the test events: metrics tables, figures; "
                    "logs to MLflow.")
    evaluation_arguments(p, "particle_flow_images", f"a network's checkpoint (repeat for {', '.join(LEARNED)})")
    p.add_argument("--templates", required=True, type=Path, help="the parametrised baseline's templates (JSON)")
