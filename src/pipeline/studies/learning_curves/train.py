"""Training one point of a learning curve: a study's own network, trained by the study's
own function on a nested subset of its training jets, with the seed of one replica."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pipeline.seeds import derive_seed
from pipeline.studies.learning_curves.methods import STUDY_OF


def replica_config(config: Mapping, replica: int) -> dict:
    """The config replica ``replica`` of a point trains with: replica 0 keeps the global seed
    (at fraction 1 the study's own training, weight for weight), replica r > 0 a seed
    derived from it and r, for every stream the training draws (initial weights, batch
    order, dropout). The fraction does not change the seed: the points of one replica
    differ by their jets only."""
    seed = config["seed"] if replica == 0 else derive_seed(config["seed"], "learning_curves", f"replica{replica}")
    return {**config, "seed": seed}


def train_point(config: Mapping, method: str, fraction: float, replica: int, train: str | Path, val: str | Path,
                checkpoint: str | Path, history: str | Path, progress: bool = True) -> dict[str, float]:
    """Train ``method`` (a vertex finder or an image tagger) on the subset file ``train``;
    the MLflow run ``learning_curves.train.<method>`` with the fraction and replica as tags."""
    if method not in STUDY_OF:
        raise ValueError(f"unknown learning-curve method {method!r}; expected one of {tuple(STUDY_OF)}")
    seeds = config["learning_curves"]["seeds"]
    if not 0 <= replica < seeds:
        raise ValueError(f"replica {replica}: learning_curves.seeds is {seeds}, expected 0..{seeds - 1}")
    if fraction not in config["learning_curves"]["fractions"]:
        raise ValueError(f"fraction {fraction}: not among learning_curves.fractions "
                         f"{config['learning_curves']['fractions']}")
    tags = {"learning_curve.fraction": str(fraction), "learning_curve.replica": str(replica),
            "learning_curve.study": STUDY_OF[method]}
    point = replica_config(config, replica)
    if STUDY_OF[method] == "vertexing":
        from pipeline.studies.vertexing.train import train_vertex_finder

        return train_vertex_finder(point, method, train, val, checkpoint, history, progress,
                                   logged_as="learning_curves", tags=tags)
    from pipeline.studies.jet_images.train import train_image_model

    return train_image_model(point, method, {"train": train, "val": val}, checkpoint, history, progress,
                             logged_as="learning_curves", tags=tags)
