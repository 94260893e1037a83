"""The simulation's sub-commands (top level of ``pipeline``): generation, the tracker and
the calorimeter per shard, the split by event, the validation plots."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.commands import add_command, config_argument, quiet_argument, split_arguments, split_paths

log = logging.getLogger(__name__)

# Each command imports its code when it runs: `pipeline --help` imports this module and would
# otherwise load jsonschema, NumPy, awkward, h5py, Pythia and matplotlib (seconds, not 0.1 s).


def _generate(args) -> None:
    from pipeline.config import sample_config
    from pipeline.run_config import load_config
    from pipeline.simulation.checks import check_generators

    config = load_config(args.config)
    check_generators(config, source=str(args.config))
    if sample_config(config, args.sample)["process"] == "particle_gun":
        from pipeline.simulation.gun import generate_gun_shard as generate
    else:
        from pipeline.simulation.generation import generate_shard as generate
    generate(config, args.sample, args.shard, args.output, progress=not args.quiet)


def _simulate_tracker(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.simulation.tracker_stage import track_shard

    track_shard(load_config(args.config), args.input, args.output, progress=not args.quiet)


def _simulate_calorimeter(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.simulation.calorimeter_stage import simulate_calorimeter

    simulate_calorimeter(load_config(args.config), args.input, args.output, progress=not args.quiet)


def _split(args) -> None:
    from pipeline.run_config import load_config
    from pipeline.simulation.split import split_sample

    counts = split_sample(load_config(args.config), args.sample, args.inputs, split_paths(args))
    log.info("events per split: %s", counts)


def _plot_validation(args) -> None:
    from pipeline.simulation.validation import plot_validation

    plot_validation(args.inputs, args.output_dir, title=args.title)


def register(sub) -> None:
    p = add_command(sub, "generate", _generate,
                    "Generate one shard of a sample with Pythia 8 and cluster particle-level jets "
                    "(anti-kt, FastJet) into a particle_jets HDF5 file; for a particle_gun sample, "
                    "the gun's particles decayed by Pythia into a gun_events HDF5 file.")
    config_argument(p)
    p.add_argument("--sample", required=True, help="sample name from the config's samples")
    p.add_argument("--shard", required=True, type=int, help="shard number, 0 <= shard < samples.<name>.shards")
    p.add_argument("--output", required=True, type=Path, help="particle_jets (gun_events) HDF5 file to write")
    quiet_argument(p)

    p = add_command(sub, "simulate-tracker", _simulate_tracker,
                    "Run the tracker model over a particle_jets file: smeared perigee tracks and "
                    "truth vertices into a track_jets HDF5 file.")
    config_argument(p)
    p.add_argument("--input", required=True, type=Path, help="particle_jets HDF5 file")
    p.add_argument("--output", required=True, type=Path, help="track_jets HDF5 file to write")
    quiet_argument(p)

    p = add_command(sub, "simulate-calorimeter", _simulate_calorimeter,
                    "Run the calorimeter model over the stored particles of a particle_jets file: "
                    "zero-suppressed cells with charged and neutral truth into a calorimeter_cells HDF5 file.")
    config_argument(p)
    p.add_argument("--input", required=True, type=Path, help="particle_jets HDF5 file (generated with particles.store)")
    p.add_argument("--output", required=True, type=Path, help="calorimeter_cells HDF5 file to write")
    quiet_argument(p)

    p = add_command(sub, "split", _split, "Split a sample's track_jets shards by event into train/val/test files.")
    config_argument(p)
    p.add_argument("--sample", required=True)
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="track_jets shard files")
    split_arguments(p, "track_jets file to write")

    p = add_command(sub, "plot-validation", _plot_validation,
                    "Draw per-flavour validation plots (track multiplicity, d0 significance, "
                    "hadron decay length, jet pT) as PNG and PDF.")
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="track_jets files")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--title", default="", help="title written on every plot")
