"""A frozen vertex finder's same-vertex edge scores, written once per finder and split.

The flavour tagger reads these instead of running the vertex finder at every epoch: the
learned finders give the sigmoid of their symmetric edge logits, the classical ones
(AVR, the baseline) 1 for tracks they put in the same vertex and 0 otherwise. Every jet
of a track_graphs file gets n * n rows (ordered pairs, row-major, 1 on the diagonal), in
the file's jet order, so a batch of jets is one contiguous slice of both files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import config_hash
from pipeline.io.hdf5 import RaggedWriter, provenance_attrs
from pipeline.ml.checkpoints import load_module
from pipeline.ml.threads import use_evaluation_threads
from pipeline.ml.tracking import log_run, run_name, run_tags
from pipeline.studies.flavour_tagging.formats import VERTEX_EDGES
from pipeline.studies.vertexing.classical import CLASSICAL, SETTINGS, classical_partition
from pipeline.studies.vertexing.data import TrackGraphBatches
from pipeline.studies.vertexing.methods import METHODS as VERTEX_FINDERS
from pipeline.studies.vertexing.models import VertexFinder
from pipeline.studies.vertexing.train import vertex_finder_identity

log = logging.getLogger(__name__)

#: Jets per scoring batch.
BATCH_JETS = 1024


def partition_scores(labels: np.ndarray) -> np.ndarray:
    """Edge scores (B, N, N) of a partition: 1 where two tracks share a label, else 0
    (labels (B, N), -1 on padding; padding pairs get 0)."""
    real = labels >= 0
    same = (labels[:, :, None] == labels[:, None, :]) & real[:, :, None] & real[:, None, :]
    return same.astype(np.float32)


def jet_edge_scores(finder: str, batch: Mapping[str, torch.Tensor], model=None,
                    mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
    """Scores (B, N, N) of one padded batch: learned finders need ``model`` (a VertexFinder),
    classical ones the feature ``mean`` and ``std`` to recover the raw track parameters."""
    mask = batch["mask"].numpy()
    if finder in CLASSICAL:
        return partition_scores(classical_partition(finder, batch["x"].numpy(), mask, mean, std))
    if model is None:
        raise ValueError(f"vertex finder {finder!r} is learned: its checkpoint is needed to score edges")
    with torch.no_grad():
        scores = torch.sigmoid(model(batch["x"], batch["mask"])).numpy().astype(np.float32)
    pairs = mask[:, :, None] & mask[:, None, :]
    scores = np.where(pairs, scores, 0.0).astype(np.float32)
    n = scores.shape[1]
    scores[:, np.arange(n), np.arange(n)] = np.where(mask, 1.0, 0.0)
    return scores


def classical_finder_run(config: Mapping, finder: str, graphs: Iterable[str | Path] = ()) -> str:
    """An MLflow run recording a classical finder's settings and the track_graphs files it
    scores (``graphs``: checksums and their data set): what the flavour-tagging runs link to
    for AVR and the baseline, which have no training run. Returns its id."""
    stage = {key: config[key] for key in ("seed", "vertexing")}
    return log_run(config, run_name("flavour_tagging", "score-edges", finder),
                   run_tags(stage, graphs, "flavour_tagging", "score-edges", finder), {}, params=SETTINGS[finder])


def score_edges(config: Mapping, finder: str, graphs: Mapping[str, str | Path], outputs: Mapping[str, str | Path],
                checkpoint: str | Path | None = None, run_id: str = "") -> dict[str, int]:
    """Write the vertex_edges file of each split (keys of ``graphs`` and ``outputs``) for
    ``finder``; ``run_id``, the MLflow run of the finder (its training run; for AVR and
    the baseline, the run that records their settings), is stored with the files.
    Returns the jets scored per split."""
    if finder not in VERTEX_FINDERS:
        raise ValueError(f"unknown vertex finder {finder!r}; expected one of {VERTEX_FINDERS}")
    if set(graphs) != set(outputs):
        raise ValueError(f"score_edges: splits of inputs {sorted(graphs)} and outputs {sorted(outputs)} differ")
    if (finder in CLASSICAL) != (checkpoint is None):
        raise ValueError(f"vertex finder {finder!r}: " + ("takes no checkpoint" if finder in CLASSICAL
                                                           else "needs its checkpoint (--checkpoint)"))
    model = None
    use_evaluation_threads(config)
    if checkpoint is not None:
        # Its recorded method and network settings against --method and the config's vertexing section.
        model = load_module(VertexFinder, checkpoint, vertex_finder_identity(config, finder)).eval()
    stage = {key: config[key] for key in ("seed", "vertexing")}
    counts = {}
    for split, path in graphs.items():
        batches = TrackGraphBatches(path, BATCH_JETS)
        mean, std = batches.feature_mean, batches.feature_std
        attrs = provenance_attrs(stage, config_hash(stage), config["seed"])
        attrs.update(vertex_finder=finder, vertex_finder_run_id=run_id, track_graphs=str(path),
                     checkpoint=str(checkpoint or ""), split=split)
        with RaggedWriter(outputs[split], VERTEX_EDGES, attrs) as writer:
            for index in tqdm(range(len(batches)), desc=f"{finder} edges ({split})", mininterval=5):
                batch = batches[index]
                mask = batch["mask"].numpy()
                scores = jet_edge_scores(finder, batch, model, mean, std)
                n = mask.sum(1)
                pairs = mask[:, :, None] & mask[:, None, :]  # row-major (i, j) within each jet
                writer.append({"jets": {"n_tracks": n, "jet_index": batch["jet_index"].numpy()},
                               "pairs": {"score": scores[pairs]}}, {"pairs": n * n})
        counts[split] = batches.n_jets
        log.info("%s: %d jets scored by %s", outputs[split], batches.n_jets, finder)
    return counts
