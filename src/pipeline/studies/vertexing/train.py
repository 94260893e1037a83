"""Training a learned vertex finder: one Lightning fit, logged to MLflow, outputs as files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pipeline.ml.checkpoints import checkpoint_identity
from pipeline.ml.trainer import train_method
from pipeline.seeds import derive_seed
from pipeline.studies.vertexing.data import TrackGraphDataModule
from pipeline.studies.vertexing.formats import TRACK_FEATURES
from pipeline.studies.vertexing.methods import LEARNED
from pipeline.studies.vertexing.models import NETWORK_KEYS, VertexFinder


def vertex_finder_network(config: Mapping, method: str) -> dict:
    """The config's settings a learned vertex finder is built with: its own keys of
    ``vertexing.network`` (NETWORK_KEYS; the other finders' do not change it) and
    ``vertexing.threshold``, the partition's cut, which the checkpoint keeps and uses."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned vertex finder {method!r}; expected one of {LEARNED}")
    network = config["vertexing"]["network"]
    return {**{key: network[key] for key in NETWORK_KEYS[method]}, "threshold": config["vertexing"]["threshold"]}


def vertex_finder_identity(config: Mapping, method: str) -> dict:
    """What a checkpoint of ``method`` trained with ``config`` records (``checkpoint_identity``)."""
    return checkpoint_identity("vertexing", method, vertex_finder_network(config, method))


def train_vertex_finder(
    config: Mapping,
    method: str,
    train_path: str | Path,
    val_path: str | Path,
    checkpoint: str | Path,
    history: str | Path,
    progress: bool = True,
    logged_as: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Train ``method`` (set2graph, track_pair, rnn); write the best checkpoint and the
    per-epoch history CSV. Returns the final validation metrics. ``logged_as``, ``tags``:
    the study the MLflow run is logged under (not ``vertexing``) and extra tags (``train_method``)."""
    if method not in LEARNED:
        raise ValueError(f"unknown learned vertex finder {method!r}; expected one of {LEARNED}")
    network = config["vertexing"]["network"]

    def data(resolved: Mapping) -> TrackGraphDataModule:
        settings = resolved["training"]
        return TrackGraphDataModule({"train": train_path, "val": val_path}, settings["batch_size"],
                                    settings["num_workers"], seed=derive_seed(config["seed"], "vertexing", method, "batches"))

    def model(resolved: Mapping) -> VertexFinder:
        settings = resolved["training"]
        return VertexFinder(method, len(TRACK_FEATURES), network, learning_rate=settings["learning_rate"],
                            threshold=config["vertexing"]["threshold"], lr_schedule=settings["lr_schedule"])

    return train_method(config, "vertexing", method, data, model, [train_path, val_path], ("vertexing",),
                        {f"network.{k}": v for k, v in network.items()}, checkpoint, history, progress, tags,
                        network=vertex_finder_network(config, method), logged_as=logged_as)
