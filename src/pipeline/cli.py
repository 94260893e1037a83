"""The ``pipeline`` command: one sub-command per workflow step, each runnable by hand."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from pipeline import __version__


def _logged_config(path: Path) -> dict:
    """The config of a command that logs to MLflow, with its tracking store checked first:
    an SQLite store initialised, a tracking server answering, before any data is read."""
    from pipeline.config import load_config
    from pipeline.tracking import tracking_uri

    config = load_config(path)
    tracking_uri(config["mlflow"])
    return config


def _generate(args) -> None:
    from pipeline.config import check_pythia_settings_of, load_config
    from pipeline.generation import generate_shard

    config = load_config(args.config)
    check_pythia_settings_of(config, source=str(args.config))
    generate_shard(config, args.sample, args.shard, args.output, progress=not args.quiet)


def _simulate_tracker(args) -> None:
    from pipeline.config import load_config
    from pipeline.tracker import track_shard

    track_shard(load_config(args.config), args.input, args.output, progress=not args.quiet)


def _simulate_calorimeter(args) -> None:
    from pipeline.calorimeter_stage import simulate_calorimeter
    from pipeline.config import load_config

    simulate_calorimeter(load_config(args.config), args.input, args.output, progress=not args.quiet)


def _build_jet_images(args) -> None:
    from pipeline.config import load_config
    from pipeline.jet_images import build_jet_images

    build_jet_images(load_config(args.config), args.generated, args.cells, args.output, progress=not args.quiet)


def _split_jet_images(args) -> None:
    from pipeline.config import load_config
    from pipeline.jet_images import split_jet_images

    counts = split_jet_images(load_config(args.config), args.inputs,
                              {"train": args.train, "val": args.val, "test": args.test})
    logging.getLogger("pipeline.jet_images").info("jets per split: %s", counts)


def _plot_jet_images(args) -> None:
    from pipeline.jet_images import plot_jet_images

    plot_jet_images(args.input, args.output_dir)


def _train_images(args) -> None:
    from pipeline.images.train import train_image_model

    train_image_model(_logged_config(args.config), args.model, {"train": args.train, "val": args.val},
                      args.checkpoint, args.history, progress=not args.quiet)


def _evaluate_images(args) -> None:
    from pipeline.images.evaluate import evaluate_autoencoders, evaluate_denoising, evaluate_taggers
    from pipeline.formats import IMAGE_MODELS

    config = _logged_config(args.config)
    checkpoints = _named_paths(args.checkpoint, "--checkpoint")
    missing = [name for name in IMAGE_MODELS if name not in checkpoints]
    if missing:
        raise ValueError(f"--checkpoint: no checkpoint for {missing}; expected one per model of {IMAGE_MODELS}")
    for evaluate, names in ((evaluate_taggers, ("mlp", "cnn")),
                            (evaluate_autoencoders, ("autoencoder", "autoencoder_inverse")),
                            (evaluate_denoising, ("denoising_autoencoder", "cnn"))):
        evaluate(config, args.test, {name: checkpoints[name] for name in names}, args.output_dir)


def _split(args) -> None:
    from pipeline.config import load_config
    from pipeline.split import split_sample

    counts = split_sample(load_config(args.config), args.sample, args.inputs,
                          {"train": args.train, "val": args.val, "test": args.test})
    logging.getLogger("pipeline.split").info("events per split: %s", counts)


def _plot_validation(args) -> None:
    from pipeline.validation import plot_validation

    plot_validation(args.inputs, args.output_dir, title=args.title)


def _build_track_graphs(args) -> None:
    from pipeline.config import load_config
    from pipeline.vertexing.features import build_track_graphs

    counts = build_track_graphs(load_config(args.config), args.sample,
                                {"train": args.train, "val": args.val, "test": args.test},
                                {"train": args.out_train, "val": args.out_val, "test": args.out_test})
    logging.getLogger("pipeline.vertexing").info("jets per split: %s", counts)


def _train_vertexing(args) -> None:
    from pipeline.vertexing.train import train_vertex_finder

    train_vertex_finder(_logged_config(args.config), args.method, args.train, args.val,
                        args.checkpoint, args.history, progress=not args.quiet)


def _evaluate_vertexing(args) -> None:
    from pipeline.vertexing.evaluate import evaluate_vertexing

    evaluate_vertexing(_logged_config(args.config), args.test, _named_paths(args.checkpoint, "--checkpoint"),
                       args.output_dir)


def _named_path_lists(items: list[str] | None, option: str) -> dict[str, list[Path]]:
    """{name: [paths]} of repeated ``option NAME=PATH`` arguments, in the order given."""
    paths: dict[str, list[Path]] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{option} {item!r}: expected NAME=PATH")
        paths.setdefault(name, []).append(Path(path))
    return paths


def _named_paths(items: list[str] | None, option: str) -> dict[str, Path]:
    """{name: path} of repeated ``option NAME=PATH`` arguments, one per name."""
    paths = _named_path_lists(items, option)
    repeated = sorted(name for name, found in paths.items() if len(found) > 1)
    if repeated:
        raise ValueError(f"{option}: {', '.join(repeated)} given more than once")
    return {name: found[0] for name, found in paths.items()}


def _score_edges(args) -> None:
    from pipeline.flavour.edges import classical_finder_run, score_edges
    from pipeline.checkpoints import checkpoint_run_id

    config = _logged_config(args.config)
    run_id = checkpoint_run_id(args.checkpoint) if args.checkpoint else classical_finder_run(config, args.finder)
    counts = score_edges(config, args.finder,
                         {"train": args.train, "val": args.val, "test": args.test},
                         {"train": args.out_train, "val": args.out_val, "test": args.out_test},
                         checkpoint=args.checkpoint, run_id=run_id)
    logging.getLogger("pipeline.flavour").info("jets scored per split: %s", counts)


def _train_flavour(args) -> None:
    from pipeline.flavour.train import train_flavour_tagger

    edges = None
    if args.edges_train or args.edges_val:
        if not (args.edges_train and args.edges_val):
            raise ValueError("--edges-train and --edges-val go together")
        edges = {"train": args.edges_train, "val": args.edges_val}
    train_flavour_tagger(_logged_config(args.config), args.method, {"train": args.train, "val": args.val}, edges,
                         args.checkpoint, args.history, progress=not args.quiet, replica=args.replica)


def _evaluate_flavour(args) -> None:
    from pipeline.flavour.evaluate import evaluate_flavour_tagging

    evaluate_flavour_tagging(_logged_config(args.config), args.test, _named_path_lists(args.checkpoint, "--checkpoint"),
                             _named_paths(args.edges, "--edges"), args.output_dir)


def _inspect(args) -> None:
    print(describe_file(args.file, show_config=not args.no_config))


def _config(args) -> None:
    from pipeline.config import check_pythia_settings_of, config_hash, load_config

    config = load_config(args.config)
    check_pythia_settings_of(config, source=str(args.config))
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output:
        from pipeline.config import write_resolved_config

        write_resolved_config(config, args.output)
    print(f"# config hash {config_hash(config)}\n{text}", end="")


def describe_file(path: str | Path, show_config: bool = True) -> str:
    """A human-readable summary of a pipeline HDF5 file (schema, counts, units, provenance)."""
    from pipeline.formats import SCHEMAS
    from pipeline.h5io import DataFileError, RaggedReader, file_schema

    path = Path(path)
    name = file_schema(path)
    if name not in SCHEMAS:
        raise DataFileError(f"{path}: not a pipeline file (schema {name!r}; known: {sorted(SCHEMAS)})")
    schema = SCHEMAS[name]
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


def config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path,
                   help="config YAML (validated against workflow/schemas/config.schema.yaml)")


def training_arguments(p: argparse.ArgumentParser, methods: list[str]) -> None:
    """The arguments every training sub-command takes: config, method, data, outputs."""
    config_argument(p)
    p.add_argument("--method", required=True, choices=methods)
    p.add_argument("--train", required=True, type=Path, help="track_graphs training file")
    p.add_argument("--val", required=True, type=Path, help="track_graphs validation file")
    p.add_argument("--checkpoint", required=True, type=Path, help="best checkpoint to write (.ckpt)")
    p.add_argument("--history", required=True, type=Path, help="per-epoch metrics to write (.csv)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def evaluation_arguments(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """The arguments every evaluation sub-command takes: config, test file, checkpoints, output."""
    config_argument(p)
    p.add_argument("--test", required=True, type=Path, help="track_graphs test file")
    p.add_argument("--checkpoint", required=True, action="append", metavar="METHOD=PATH", help=checkpoint_help)
    p.add_argument("--output-dir", required=True, type=Path)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.formats import IMAGE_MODELS, VERTEX_FINDERS

    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="From Pythia 8 events through a fast detector model to versioned HDF5 "
        "(the steps of the Snakemake workflow, runnable by hand).",
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("generate", _generate,
            "Generate one shard of a sample with Pythia 8 and cluster particle-level jets "
            "(anti-kt, FastJet) into a particle_jets HDF5 file.")
    config_argument(p)
    p.add_argument("--sample", required=True, help="sample name from the config's samples")
    p.add_argument("--shard", required=True, type=int, help="shard number, 0 <= shard < samples.<name>.shards")
    p.add_argument("--output", required=True, type=Path, help="particle_jets HDF5 file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("simulate-tracker", _simulate_tracker,
            "Run the tracker model over a particle_jets file: smeared perigee tracks and "
            "truth vertices into a track_jets HDF5 file.")
    config_argument(p)
    p.add_argument("--input", required=True, type=Path, help="particle_jets HDF5 file")
    p.add_argument("--output", required=True, type=Path, help="track_jets HDF5 file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("simulate-calorimeter", _simulate_calorimeter,
            "Run the calorimeter model over the stored particles of a particle_jets file: "
            "zero-suppressed cells with charged and neutral truth into a calorimeter_cells HDF5 file.")
    config_argument(p)
    p.add_argument("--input", required=True, type=Path, help="particle_jets HDF5 file (generated with particles.store)")
    p.add_argument("--output", required=True, type=Path, help="calorimeter_cells HDF5 file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("build-jet-images", _build_jet_images,
            "Build the preprocessed jet images of one shard of the jet-image study's signal or "
            "background sample into a jet_images HDF5 file.")
    config_argument(p)
    p.add_argument("--generated", required=True, type=Path, help="particle_jets file (the jets)")
    p.add_argument("--cells", required=True, type=Path, help="calorimeter_cells file of the same shard")
    p.add_argument("--output", required=True, type=Path, help="jet_images HDF5 file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("split-jet-images", _split_jet_images,
            "Merge the signal and background jet_images shards into shuffled train/val/test files, by event.")
    config_argument(p)
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="jet_images shard files")
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--val", required=True, type=Path)
    p.add_argument("--test", required=True, type=Path)

    p = add("plot-jet-images", _plot_jet_images,
            "Draw the average jet image of each class and a few single jets (PNG and PDF).")
    p.add_argument("--input", required=True, type=Path, help="jet_images file")
    p.add_argument("--output-dir", required=True, type=Path)

    p = add("train-images", _train_images,
            "Train a model of the jet-image study (mlp, cnn taggers; autoencoder on QCD, autoencoder_inverse "
            "on top; denoising_autoencoder) with Lightning; logs to MLflow.")
    config_argument(p)
    p.add_argument("--model", required=True, choices=IMAGE_MODELS)
    p.add_argument("--train", required=True, type=Path, help="jet_images training file")
    p.add_argument("--val", required=True, type=Path, help="jet_images validation file")
    p.add_argument("--checkpoint", required=True, type=Path, help="best checkpoint to write (.ckpt)")
    p.add_argument("--history", required=True, type=Path, help="per-epoch metrics to write (.csv)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("evaluate-images", _evaluate_images,
            "Evaluate the jet-image models on the test images: taggers, autoencoders (anomaly scores) and "
            "denoising tables and figures; logs to MLflow.")
    config_argument(p)
    p.add_argument("--test", required=True, type=Path, help="jet_images test file")
    p.add_argument("--checkpoint", required=True, action="append", metavar="MODEL=PATH",
                   help="a model's checkpoint (repeat for mlp, cnn, autoencoder, autoencoder_inverse, "
                        "denoising_autoencoder)")
    p.add_argument("--output-dir", required=True, type=Path)

    p = add("split", _split, "Split a sample's track_jets shards by event into train/val/test files.")
    config_argument(p)
    p.add_argument("--sample", required=True)
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="track_jets shard files")
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--val", required=True, type=Path)
    p.add_argument("--test", required=True, type=Path)

    p = add("plot-validation", _plot_validation,
            "Draw per-flavour validation plots (track multiplicity, d0 significance, "
            "hadron decay length, jet pT) as PNG and PDF.")
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="track_jets files")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--title", default="", help="title written on every plot")

    p = add("build-track-graphs", _build_track_graphs,
            "Turn a sample's train/val/test track_jets files into standardised track sets "
            "(track_graphs files) for the vertex finders.")
    config_argument(p)
    p.add_argument("--sample", required=True)
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}", required=True, type=Path, help=f"{split} track_jets file")
        p.add_argument(f"--out-{split}", required=True, type=Path, help=f"{split} track_graphs file to write")

    p = add("train-vertexing", _train_vertexing,
            "Train a learned vertex finder (set2graph, track_pair, rnn) with Lightning; logs to MLflow.")
    training_arguments(p, ["set2graph", "track_pair", "rnn"])

    p = add("evaluate-vertexing", _evaluate_vertexing,
            "Evaluate AVR, the baseline, the learned vertex finders and the trivial partitions on "
            "the test jets: metrics.csv, tables, figure, predictions.h5; logs to MLflow.")
    evaluation_arguments(p, "a learned method's checkpoint (repeat for set2graph, track_pair, rnn)")

    p = add("score-edges", _score_edges,
            "Write a frozen vertex finder's same-vertex edge scores for the track_graphs splits "
            "(the flavour tagger's input).")
    config_argument(p)
    p.add_argument("--finder", required=True, choices=VERTEX_FINDERS)
    p.add_argument("--checkpoint", type=Path, help="the learned finder's checkpoint (not for avr, baseline)")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}", required=True, type=Path, help=f"track_graphs {split} file")
        p.add_argument(f"--out-{split}", required=True, type=Path, help=f"vertex_edges {split} file to write")

    p = add("train-flavour", _train_flavour,
            "Train the b / c / light graph tagger on one vertex finder's edges (or none: no_vertex).")
    training_arguments(p, ["no_vertex", *VERTEX_FINDERS])
    p.add_argument("--edges-train", type=Path, help="vertex_edges of the training file (not for no_vertex)")
    p.add_argument("--edges-val", type=Path, help="vertex_edges of the validation file (not for no_vertex)")
    p.add_argument("--replica", type=int, default=0,
                   help="which of the flavour_tagging.seeds trainings (0, 1, ...) this is")

    p = add("evaluate-flavour", _evaluate_flavour,
            "Evaluate the flavour taggers on the test jets: metrics.csv, the lecture-style table, ROC and "
            "confusion figures; logs to MLflow.")
    evaluation_arguments(p, "a tagger's checkpoint (repeat for no_vertex and every vertex finder, "
                            "and for every replica: the table quotes their mean)")
    p.add_argument("--edges", required=True, action="append", metavar="FINDER=PATH",
                   help="a vertex finder's test vertex_edges file (repeat for every finder)")

    p = add("inspect", _inspect, "Print a pipeline HDF5 file's schema version, counts, units, config and seed.")
    p.add_argument("file", type=Path)
    p.add_argument("--no-config", action="store_true", help="do not print the stored config")

    p = add("config", _config, "Validate a config file and print it with all defaults filled in.")
    p.add_argument("config", type=Path)
    p.add_argument("--output", type=Path, help="also write the resolved config here")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import ConfigError
    from pipeline.h5io import DataFileError
    from pipeline.tracking import TrackingServerError

    args = build_parser().parse_args(argv)
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
