"""Tiny, realistic files of every schema, made by the real chain (no stored fixtures).

Tests and examples call ``write_tiny_dataset``; it runs Pythia, FastJet and the tracker
on a few events, so the files are as realistic as the workflow's own.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import validate_config
from pipeline.simulation.generation import generate_shard
from pipeline.simulation.tracker_stage import track_shard


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


def tiny_workflow_config() -> dict:
    """The raw config of the smallest run of the whole default DAG (a minute or two on two
    cores): a 60-event ttbar sample for vertexing and flavour tagging, 80 boosted top and
    80 QCD events for the jet-image study, small networks, two epochs. The tests' and the
    Slurm benchmark's end-to-end runs use it."""
    boosted = {"sqrt_s": 14000.0, "pthat_min": 500.0, "pthat_max": 700.0, "events_per_shard": 80, "shards": 1,
               "batch_size": 80, "jets": {"radius": 0.8, "min_pt": 550.0, "max_pt": 650.0, "max_abs_eta": 2.0},
               "particles": {"store": True}}
    return {
        "seed": 3,
        "samples": {"tiny": {"process": "ttbar", "events_per_shard": 30, "shards": 2, "batch_size": 30},
                    "top": {"process": "ttbar", "pythia_settings": ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"],
                            **boosted},
                    "qcd": {"process": "qcd_dijet", **boosted}},
        "vertexing": {"network": {"set_widths": [32, 32, 5], "edge_widths": [32], "pair_widths": [32],
                                  "rnn_hidden": 16, "rnn_layers": 1}},
        "training": {"max_epochs": 2, "batch_size": 32},
        "flavour_tagging": {"width": 8, "message_layers": 1, "readout_widths": [8]},
        "jet_images": {"mlp": {"widths": [16]}, "cnn": {"channels": [4, 4], "dense": 8},
                       "autoencoder": {"channels": [4, 4], "latent": 4}},
    }
