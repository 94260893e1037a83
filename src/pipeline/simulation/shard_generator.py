"""The start every generated shard shares, Pythia's events and the particle gun alike:
Pythia seeded for the shard and initialised, and the output file's provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from pipeline.config import config_hash, sample_config, stage_config
from pipeline.io.hdf5 import provenance_attrs
from pipeline.seeds import derive_seed
from pipeline.simulation.pythia import ChargeTable, make_pythia, pythia_settings, pythia_version


@dataclass
class ShardGenerator:
    """What every generated shard starts from: the sample's settings, Pythia's seed and
    setting strings, the initialised Pythia, its charge table and the file's provenance."""

    sample: dict
    seed: int
    settings: list[str]
    pythia: object
    charges: ChargeTable
    attrs: dict

    @classmethod
    def start(cls, config: Mapping, sample_name: str, shard: int) -> "ShardGenerator":
        """Pythia seeded with derive_seed(seed, sample, shard, "pythia") and the provenance
        attributes (``provenance_attrs`` of the sample's config, the sample and shard,
        Pythia's version and settings); ValueError for a shard out of range."""
        sample = sample_config(config, sample_name)
        if shard < 0 or shard >= sample["shards"]:
            raise ValueError(f"shard {shard} out of range: sample {sample_name!r} has {sample['shards']} shards")
        seed = derive_seed(config["seed"], sample_name, shard, "pythia")
        settings = pythia_settings(sample, seed)
        pythia = make_pythia(settings)
        stage = stage_config(config, sample_name)
        attrs = provenance_attrs(stage, config_hash(stage), seed)
        attrs.update(sample=sample_name, shard=shard, pythia_version=pythia_version(pythia),
                     pythia_settings="\n".join(settings))
        return cls(sample, seed, settings, pythia, ChargeTable(pythia.particleData), attrs)
