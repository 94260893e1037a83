"""Training the flavour tagger on one vertex finder's edges (or none): same seed, same budget."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import h5py
import lightning.pytorch as pl
import numpy as np

from pipeline.config import derive_seed
from pipeline.studies.flavour_tagging.methods import METHODS
from pipeline.studies.vertexing.formats import TRACK_FEATURES


def edges_run_id(path: str | Path) -> str:
    """The MLflow run id of the vertex finder that scored a vertex_edges file."""
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("vertex_finder_run_id", ""))


def replica_seed(global_seed: int, replica: int, *stream: str) -> int:
    """The seed of one of the tagger's random streams in training replica ``replica``
    (replica 0 keeps the seeds of a single training)."""
    return derive_seed(global_seed, "flavour_tagging", *stream, *([f"replica{replica}"] if replica else []))


def tagger_config(config: Mapping) -> dict:
    """The config whose ``training`` section has the flavour study's own overrides applied."""
    from pipeline.ml.trainer import with_training_overrides

    return with_training_overrides(config, config["flavour_tagging"]["training"])


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
    from pipeline.ml.tracking import run_name, run_tags
    from pipeline.ml.trainer import fit_and_export
    from pipeline.studies.flavour_tagging.data import FlavourDataModule, class_counts
    from pipeline.studies.flavour_tagging.models import FlavourTagger

    if method not in METHODS:
        raise ValueError(f"unknown flavour-tagging method {method!r}; expected one of {METHODS}")
    if (method == "no_vertex") != (edges is None):
        raise ValueError(f"{method}: " + ("takes no edge scores" if method == "no_vertex"
                                          else "needs the vertex finder's train and val edge files"))
    config = tagger_config(config)
    settings, study = config["training"], config["flavour_tagging"]
    if not 0 <= replica < study["seeds"]:
        raise ValueError(f"replica {replica}: flavour_tagging.seeds is {study['seeds']}, "
                         f"so the replica must be in 0..{study['seeds'] - 1}")
    pl.seed_everything(replica_seed(config["seed"], replica), workers=True, verbose=False)
    data = FlavourDataModule(graphs, edges, settings["batch_size"], settings["num_workers"],
                             seed=replica_seed(config["seed"], replica, "batches"))
    counts = class_counts(graphs["train"])
    if not counts.any():
        raise ValueError(f"{graphs['train']}: no training jets")
    # Inverse-frequency weights: every flavour counts equally in the loss.
    weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()
    model = FlavourTagger(len(TRACK_FEATURES), study["width"], study["message_layers"], study["readout_widths"],
                          settings["learning_rate"], weights, settings["lr_schedule"])
    finder_run = edges_run_id(edges["train"]) if edges else ""
    inputs = [*graphs.values(), *(edges or {}).values()]
    stage = {key: config[key] for key in ("seed", "vertexing", "flavour_tagging", "training")}
    tags = {**run_tags(stage, inputs, "flavour_tagging", "train", method), "replica": str(replica),
            "vertex_finder": method, "vertex_finder.run_id": finder_run or "none"}
    params = {"method": method, "replica": replica, "class_weights": weights, **{f"training.{k}": v for k, v in settings.items()},
              **{f"tagger.{k}": v for k, v in study.items() if k != "training"}}
    final, _ = fit_and_export(config, model, data, run_name("flavour_tagging", "train", method), tags, params, checkpoint, history, progress)
    return final
