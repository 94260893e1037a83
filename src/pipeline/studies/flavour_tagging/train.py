"""Training the flavour tagger on one vertex finder's edges (or none): same seed, same budget."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from pipeline.ml.checkpoints import checkpoint_identity
from pipeline.ml.trainer import train_method
from pipeline.seeds import derive_seed
from pipeline.studies.flavour_tagging.data import FlavourDataModule, class_counts
from pipeline.studies.flavour_tagging.methods import METHODS
from pipeline.studies.flavour_tagging.models import FlavourTagger
from pipeline.studies.vertexing.formats import TRACK_FEATURES


def edges_run_id(path: str | Path) -> str:
    """The MLflow run id of the vertex finder that scored a vertex_edges file."""
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("vertex_finder_run_id", ""))


#: The settings of ``flavour_tagging`` the tagger's network is built with.
NETWORK_KEYS = ("width", "message_layers", "readout_widths")


def tagger_identity(config: Mapping, method: str) -> dict:
    """What a tagger checkpoint of ``method`` trained with ``config`` records
    (``checkpoint_identity``): its network settings and ``vertex_finder``, whose edges it
    read (``none`` for no_vertex), so that a tagger of another finder's edges is refused."""
    if method not in METHODS:
        raise ValueError(f"unknown flavour-tagging method {method!r}; expected one of {METHODS}")
    study = config["flavour_tagging"]
    return checkpoint_identity("flavour_tagging", method, {key: study[key] for key in NETWORK_KEYS},
                               vertex_finder="none" if method == "no_vertex" else method)


def replica_seed(global_seed: int, replica: int, *stream: str) -> int:
    """The seed of one of the tagger's random streams in training replica ``replica``
    (replica 0 keeps the seeds of a single training)."""
    return derive_seed(global_seed, "flavour_tagging", *stream, *([f"replica{replica}"] if replica else []))


def train_flavour_tagger(
    config: Mapping,
    method: str,
    graphs: Mapping[str, str | Path],
    edges: Mapping[str, str | Path] | None,
    checkpoint: str | Path,
    history: str | Path,
    progress: bool = True,
    replica: int = 0,
) -> dict[str, float]:
    """Train the tagger for ``method`` (``no_vertex`` takes no edges, every vertex finder
    its train and val vertex_edges files); write the best checkpoint and the history CSV.

    ``replica`` r < ``flavour_tagging.seeds`` picks the r-th seed; replica r of every
    method shares that seed, so the rows of one replica differ only in their edges."""
    if method not in METHODS:
        raise ValueError(f"unknown flavour-tagging method {method!r}; expected one of {METHODS}")
    if (method == "no_vertex") != (edges is None):
        raise ValueError(f"{method}: " + ("takes no edge scores" if method == "no_vertex"
                                          else "needs the vertex finder's train and val edge files"))
    study = config["flavour_tagging"]
    if not 0 <= replica < study["seeds"]:
        raise ValueError(f"replica {replica}: flavour_tagging.seeds is {study['seeds']}, "
                         f"so the replica must be in 0..{study['seeds'] - 1}")
    counts = class_counts(graphs["train"])
    if not counts.any():
        raise ValueError(f"{graphs['train']}: no training jets")
    # Inverse-frequency weights: every flavour counts equally in the loss.
    weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()

    def data(resolved: Mapping) -> FlavourDataModule:
        settings = resolved["training"]
        return FlavourDataModule(graphs, edges, settings["batch_size"], settings["num_workers"],
                                 seed=replica_seed(config["seed"], replica, "batches"))

    def model(resolved: Mapping) -> FlavourTagger:
        settings = resolved["training"]
        return FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                             learning_rate=settings["learning_rate"], class_weights=weights,
                             lr_schedule=settings["lr_schedule"])

    finder_run = edges_run_id(edges["train"]) if edges else ""
    tags = {"replica": str(replica), "vertex_finder": method, "vertex_finder.run_id": finder_run or "none"}
    params = {"replica": replica, "class_weights": weights,
              **{f"tagger.{k}": v for k, v in study.items() if k != "training"}}
    return train_method(config, "flavour_tagging", method, data, model, [*graphs.values(), *(edges or {}).values()],
                        ("vertexing", "flavour_tagging"), params, checkpoint, history, progress, tags=tags,
                        seed=replica_seed(config["seed"], replica),
                        network={key: study[key] for key in NETWORK_KEYS},
                        recorded={"vertex_finder": tagger_identity(config, method)["vertex_finder"],
                                  "vertex_finder_run_id": finder_run})
