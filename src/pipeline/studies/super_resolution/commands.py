"""``pipeline super_resolution ...``: the calorimeter super-resolution study's sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import (
    add_command,
    evaluation_arguments,
    gun_shard_arguments,
    logged_config,
    named_paths,
    sample_split_arguments,
    split_paths,
    training_arguments,
)
from pipeline.studies.super_resolution.methods import LEARNED

log = logging.getLogger(__name__)


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _build(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.super_resolution.detector import build_shard

    rows = build_shard(load_config(args.config), args.generated, args.output, progress=not args.quiet)
    log.info("rows written: %s", rows)


def _split(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.simulation.split import split_sample
    from pipeline.studies.particle_flow.formats import PARTICLE_FLOW_IMAGES
    from pipeline.studies.super_resolution.detector import IMAGE_SECTIONS, detector_config

    # The split files store the detector they hold, as the shards do: readers take the
    # geometry from the stored config.
    counts = split_sample(detector_config(load_config(args.config)), args.sample, args.inputs, split_paths(args),
                          PARTICLE_FLOW_IMAGES, ("split", *IMAGE_SECTIONS))
    log.info("events per split: %s", counts)


def _train(args) -> None:
    from pipeline.studies.super_resolution.train import train_super_resolution

    train_super_resolution(logged_config(args.config), args.method, {"train": args.train, "val": args.val},
                           args.checkpoint, args.history, progress=not args.quiet)


def _evaluate(args) -> None:
    from pipeline.studies.super_resolution.evaluate import evaluate_super_resolution

    given = [args.particle_flow_checkpoint is not None, args.particle_flow_metrics is not None]
    if any(given) and not all(given):
        raise ValueError("--particle-flow-checkpoint and --particle-flow-metrics go together (the downstream study)")
    particle_flow = ({"checkpoint": args.particle_flow_checkpoint, "metrics": args.particle_flow_metrics}
                     if all(given) else None)
    evaluate_super_resolution(logged_config(args.config), args.test, args.pi0_test,
                              named_paths(args.checkpoint, "--checkpoint"), args.output_dir, particle_flow)


def register(sub) -> None:
    p = add_command(sub, "build", _build,
                    "Build the calorimeter images of one particle-gun shard with this study's detector cells "
                    "(particle_flow_images format).")
    gun_shard_arguments(p, "particle_flow_images")

    p = add_command(sub, "split", _split, "Merge a sample's image shards of this study into train/val/test files, "
                    "by event.")
    sample_split_arguments(p, "particle_flow_images")

    p = add_command(sub, "train", _train,
                    "Train a super-resolution network (redistribute, cnn) with Lightning on the study's two samples; "
                    "logs to MLflow.")
    training_arguments(p, LEARNED, "particle_flow_images", several=True)

    p = add_command(sub, "evaluate", _evaluate,
                    "Score the interpolations and every network: image metrics per layer on the study's sample, "
                    "photon pairs and diphoton mass on the pi0 sample; tables, figures; logs to MLflow.")
    evaluation_arguments(p, "particle_flow_images", f"a network's checkpoint (repeat for {', '.join(LEARNED)})")
    p.add_argument("--pi0-test", required=True, type=Path, help="particle_flow_images test file of the pi0 sample")
    p.add_argument("--particle-flow-checkpoint", type=Path, default=None,
                   help="the particle-flow study's cnn checkpoint: fed every method's images (downstream.csv)")
    p.add_argument("--particle-flow-metrics", type=Path, default=None,
                   help="the particle-flow study's metrics.csv: its own cnn rows beside the downstream ones")
