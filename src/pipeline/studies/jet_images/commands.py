"""``pipeline jet_images ...``: the jet-image study's sub-commands."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import (
    add_command,
    config_argument,
    evaluation_arguments,
    logged_config,
    named_paths,
    quiet_argument,
    split_arguments,
    split_paths,
    training_arguments,
)
from pipeline.studies.jet_images.methods import METHODS

log = logging.getLogger(__name__)


# Each step imports its code when it runs: `pipeline --help` imports every commands module.
def _build(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.jet_images.preparation import build_jet_images

    build_jet_images(load_config(args.config), args.generated, args.cells, args.output, progress=not args.quiet)


def _split(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.jet_images.preparation import split_jet_images

    counts = split_jet_images(load_config(args.config), args.inputs,
                              split_paths(args))
    log.info("jets per split: %s", counts)


def _convert(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.studies.jet_images.reference import convert_top_tagging

    counts = convert_top_tagging(load_config(args.config), split_paths(args), progress=not args.quiet)
    log.info("jets per split: %s", counts)


def _plot(args) -> None:
    from pipeline.studies.jet_images.preparation import plot_jet_images

    plot_jet_images(args.input, args.output_dir)


def _train(args) -> None:
    from pipeline.studies.jet_images.train import train_image_model

    train_image_model(logged_config(args.config), args.method, {"train": args.train, "val": args.val},
                      args.checkpoint, args.history, progress=not args.quiet)


def _evaluate(args) -> None:
    from pipeline.studies.jet_images.evaluate import evaluate_jet_images

    evaluate_jet_images(logged_config(args.config), args.test, named_paths(args.checkpoint, "--checkpoint"),
                        args.output_dir)


def register(sub) -> None:
    p = add_command(sub, "build", _build,
                    "Build the preprocessed jet images of one shard of the study's signal or background sample "
                    "into a jet_images HDF5 file.")
    config_argument(p)
    p.add_argument("--generated", required=True, type=Path, help="particle_jets file (the jets)")
    p.add_argument("--cells", type=Path, help="calorimeter_cells file of the same shard (not with jet_images.objects: "
                   "particles)")
    p.add_argument("--output", required=True, type=Path, help="jet_images HDF5 file to write")
    quiet_argument(p)

    p = add_command(sub, "split", _split,
                    "Merge the signal and background jet_images shards into shuffled train/val/test files, by event.")
    config_argument(p)
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="jet_images shard files")
    split_arguments(p, "jet_images file to write")

    p = add_command(sub, "convert", _convert,
                    "Build the train/val/test jet_images files from the Top Quark Tagging Reference Dataset's "
                    "train.h5, val.h5 and test.h5 (the config's top_tagging sample: its source.path).")
    config_argument(p)
    split_arguments(p, "jet_images file to write")
    quiet_argument(p)

    p = add_command(sub, "plot", _plot, "Draw the average jet image of each class and a few single jets (PNG and PDF).")
    p.add_argument("--input", required=True, type=Path, help="jet_images file")
    p.add_argument("--output-dir", required=True, type=Path)

    p = add_command(sub, "train", _train,
                    "Train a model of the jet-image study (mlp, cnn taggers; autoencoder on QCD, autoencoder_inverse "
                    "on top; denoising_autoencoder) with Lightning; logs to MLflow.")
    training_arguments(p, METHODS, "jet_images")

    p = add_command(sub, "evaluate", _evaluate,
                    "Evaluate the jet-image models on the test images: taggers, autoencoders (anomaly scores) and "
                    "denoising tables and figures; logs to MLflow.")
    evaluation_arguments(p, "jet_images", f"a method's checkpoint (repeat for {', '.join(METHODS)})")
