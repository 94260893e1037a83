"""Tiny, realistic files of every schema, made by the real chain (no stored fixtures).

Tests and examples call ``write_tiny_dataset``; it runs Pythia, FastJet and the tracker
on a few events, so the files are as realistic as the workflow's own. The tiny run of the
whole workflow is a file, ``.test/config/config.yaml``; ``tiny_workflow_config`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.run_config import resolve_config
from pipeline.simulation.generation import generate_shard
from pipeline.simulation.tracker_stage import track_shard


def tiny_config(events_per_shard: int = 20, shards: int = 2, seed: int = 7, process: str = "ttbar") -> dict:
    """A resolved config with one small sample named ``tiny``."""
    return resolve_config(
        {
            "seed": seed,
            "samples": {
                "tiny": {"process": process, "events_per_shard": events_per_shard,
                         "shards": shards, "batch_size": min(events_per_shard, 100)}
            },
        },
        source="tiny_config",
    )


def write_tiny_dataset(directory: str | Path, config: dict | None = None, shard: int = 0) -> dict[str, Path]:
    """Generate and track one shard of ``config`` (default: tiny_config()) into directory.

    Returns {"particle_jets": path, "track_jets": path}.
    """
    config = config or tiny_config()
    sample = next(iter(config["samples"]))
    directory = Path(directory)
    generated = directory / f"{sample}_generated_{shard}.h5"
    tracks = directory / f"{sample}_tracks_{shard}.h5"
    generate_shard(config, sample, shard, generated, progress=False)
    track_shard(config, generated, tracks, progress=False)
    return {"particle_jets": generated, "track_jets": tracks}


def write_tiny_track_graphs(directory: str | Path, config: dict, track_jets: str | Path) -> dict[str, Path]:
    """Split a track_jets file of ``config``'s first sample (``write_tiny_dataset``) and
    build its track graphs, the vertex finders' and the flavour tagger's input, in directory.

    Returns {"train": path, "val": path, "test": path} of the track_graphs files.
    """
    from pipeline.simulation.split import split_sample
    from pipeline.studies.vertexing.features import build_track_graphs

    sample = next(iter(config["samples"]))
    directory = Path(directory)
    splits = {name: directory / f"{name}.h5" for name in ("train", "val", "test")}
    split_sample(config, sample, [track_jets], splits)
    graphs = {name: directory / f"graphs_{name}.h5" for name in splits}
    build_track_graphs(config, sample, splits, graphs)
    return graphs


#: The tiny configuration of the whole DAG, a file at the repository root (``.test/``, where
#: the Snakemake workflow catalog looks), found from the package's source tree.
TINY_WORKFLOW_CONFIG = Path(__file__).resolve().parents[2] / ".test" / "config" / "config.yaml"


def tiny_workflow_config() -> dict:
    """The raw config of the smallest run of the whole default DAG (a few minutes on two
    cores), read from ``.test/config/config.yaml`` (TINY_WORKFLOW_CONFIG): a 60-event
    ttbar sample for vertexing and flavour tagging, 80 boosted top and 80 QCD events for
    the jet-image study, 60 pi+ pi0 and 40 pi+ gun events for the particle flow, 40 pi0 for
    the super-resolution (with the pi+ pi0 events), small
    networks, two epochs. The tests' and the Slurm benchmark's
    end-to-end runs use it; a user runs it with
    ``snakemake --configfile .test/config/config.yaml --directory <dir>``.

    A new dict on every call (callers may change it). FileNotFoundError, naming the path,
    where the package is installed without its source tree.
    """
    if not TINY_WORKFLOW_CONFIG.is_file():
        raise FileNotFoundError(f"{TINY_WORKFLOW_CONFIG}: the tiny workflow config is a file of the repository "
                                "(.test/config/config.yaml); install the package from a checkout (pip install -e .)")
    return yaml.safe_load(TINY_WORKFLOW_CONFIG.read_text())
