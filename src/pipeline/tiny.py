"""Tiny, realistic files of every schema, made by the real chain (no stored fixtures).

Tests and examples call ``write_tiny_dataset``; it runs Pythia, FastJet and the tracker
on a few events, so the files are as realistic as the workflow's own.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import validate_config
from pipeline.generation import generate_shard
from pipeline.tracker import track_shard


def tiny_config(events_per_shard: int = 20, shards: int = 2, seed: int = 7, process: str = "ttbar") -> dict:
    """A resolved config with one small sample named ``tiny``."""
    return validate_config(
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
