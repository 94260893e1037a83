"""Jets as fully connected track graphs with a vertex finder's edge scores, for PyG layers.

A batch is a contiguous slice of jets of a track_graphs file and the same slice of a
vertex_edges file (the finder's scores), turned into PyG's sparse form: node features
(n_tracks, F), ``edge_index`` (2, n_edges) over all ordered pairs i != j of each jet,
one score per edge, and the ``batch`` vector mapping tracks to jets. Without an edges
file (the no-vertex control) every edge carries the same constant score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.io.hdf5 import DataFileError, LazyFile, RaggedReader
from pipeline.studies.flavour_tagging.formats import VERTEX_EDGES
from pipeline.studies.vertexing.data import TrackGraphBatches, TrackGraphDataModule, pad_tracks
from pipeline.studies.vertexing.formats import TRACK_FEATURES

#: Output classes of the tagger, in order, and the jet flavour codes they stand for.
CLASSES = ("b", "c", "light")
FLAVOUR_CODES = (5, 4, 0)
#: Jet-level features given to the readout (standardised track_graphs columns).
JET_FEATURES = ("jet_log_pt", "jet_eta", "jet_phi", "jet_mass")
#: Contiguous slices joined into one training batch (see FlavourBatches).
MIXED_SLICES = 8
#: The edge score of the no-vertex control: a constant carries no vertex information
#: (one half: both message channels of the tagger stay open, see EdgeScoreConv).
CONSTANT_SCORE = 0.5


def flavour_classes(flavour: np.ndarray) -> np.ndarray:
    """Class index (0 = b, 1 = c, 2 = light) of jet flavour codes (5, 4, 0)."""
    flavour = np.asarray(flavour)
    classes = np.full(flavour.shape, -1, np.int64)
    for index, code in enumerate(FLAVOUR_CODES):
        classes[flavour == code] = index
    if (classes < 0).any():
        raise ValueError(f"unknown jet flavour codes {sorted(set(flavour[classes < 0].tolist()))}; expected 5, 4, 0")
    return classes


def dense_to_graph(x: torch.Tensor, mask: torch.Tensor, score: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sparse graph tensors of padded jets: x (B, N, F), mask (B, N), score (B, N, N).

    Returns x (n_nodes, F), edge_index (2, n_edges) as (source j, target i) over the
    ordered pairs i != j of every jet, edge_score (n_edges,), batch (n_nodes,) and
    jet (B, len(JET_FEATURES)) features.
    """
    b, n, _ = x.shape
    node = torch.full((b, n), -1, dtype=torch.long)
    node[mask] = torch.arange(int(mask.sum()))
    pairs = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    jet, i, j = pairs.nonzero(as_tuple=True)
    columns = [TRACK_FEATURES.index(name) for name in JET_FEATURES]
    return {
        "x": x[mask],
        "edge_index": torch.stack([node[jet, j], node[jet, i]]),
        "edge_score": score[jet, i, j],
        "batch": mask.nonzero(as_tuple=True)[0],
        "jet": x[:, 0, columns],
    }


class EdgeScoreFile(LazyFile):
    """A vertex_edges file read slice by slice, from any DataLoader worker (``LazyFile``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)


class FlavourBatches(Dataset):
    """Item i: batch i of jets as a graph, with the edge scores of the same jets from a
    vertex_edges file (or the constant score when ``edges`` is None).

    The track_graphs files are ordered by track count, and track count goes with flavour
    (b jets have more tracks), so a contiguous slice of jets is far from a fair sample of
    flavours. With ``slices_per_batch`` > 1 a batch joins that many smaller contiguous
    slices drawn by a seeded permutation: still slice reads, but mixed flavours.
    """

    def __init__(self, graphs: str | Path, edges: str | Path | None, batch_size: int,
                 slices_per_batch: int = 1, seed: int = 0):
        self.tracks = TrackGraphBatches(graphs, max(batch_size // slices_per_batch, 1))
        self.edges = EdgeScoreFile(edges) if edges is not None else None
        if self.edges is not None:
            with RaggedReader(self.edges.path, VERTEX_EDGES) as reader:
                n_edges_jets = reader.n_rows("jets")
                n_tracks = reader.read("jets", ["n_tracks"])["n_tracks"]
            with h5py.File(graphs, "r") as f:
                expected = f["jets"]["n_tracks"][:]
            if n_edges_jets != self.tracks.n_jets or not np.array_equal(n_tracks, expected):
                raise DataFileError(f"{self.edges.path}: its jets do not match {graphs} "
                                    f"({n_edges_jets} vs {self.tracks.n_jets} jets); score the edges of that file again")
        n_slices = len(self.tracks)
        order = np.random.default_rng(seed).permutation(n_slices) if slices_per_batch > 1 else np.arange(n_slices)
        self.groups = [np.sort(group) for group in np.array_split(order, math.ceil(n_slices / slices_per_batch))]

    def __len__(self) -> int:
        return len(self.groups)

    def _slice(self, index: int) -> dict[str, np.ndarray]:
        """Slice ``index`` of the files as read (``TrackGraphBatches.read``) and, with an
        edges file, ``score``: the flattened n x n score matrix of every jet."""
        part = self.tracks.read(index)
        if self.edges is not None:
            start = int(part["jets"][0])
            with self.edges._reading(f"the edge scores of jets {start}:{start + len(part['jets'])}"):
                pairs = self.edges._dataset("pairs/offsets")[start : start + len(part["jets"]) + 1]
                part["score"] = self.edges._dataset("pairs/score")[int(pairs[0]) : int(pairs[-1])]
        return part

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        # The group's slices joined, padded and turned into one graph: the nodes and edges
        # in the order of per-slice graphs put one after the other, at one pass of tensor
        # operations a batch instead of one a slice (their fixed costs were most of the loader).
        parts = [self._slice(int(k)) for k in self.groups[index]]
        joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0] if key != "offsets"}
        counts = np.concatenate([np.diff(part["offsets"]) for part in parts])
        batch = pad_tracks(joined["features"], joined["vertex"], np.concatenate([[0], np.cumsum(counts)]))
        mask = batch["mask"]
        score = torch.full(mask.shape + mask.shape[1:], CONSTANT_SCORE)
        if self.edges is not None:
            score.zero_()
            score[mask[:, :, None] & mask[:, None, :]] = torch.from_numpy(joined["score"])
        graph = dense_to_graph(batch["x"], mask, score)
        graph["label"] = torch.from_numpy(flavour_classes(joined["flavour"]))
        graph["jet_index"] = torch.from_numpy(joined["jets"])
        graph["n_tracks"] = batch["n_tracks"]
        return graph


class FlavourDataModule(TrackGraphDataModule):
    """Train / val / test jet graphs with one vertex finder's edge scores (or none)."""

    def __init__(self, paths: Mapping[str, str | Path], edges: Mapping[str, str | Path] | None,
                 batch_size: int = 256, num_workers: int = 0, seed: int = 0):
        super().__init__(paths, batch_size, num_workers, seed)
        self.edges = {name: Path(p) for name, p in (edges or {}).items()}
        missing = set(self.paths) - set(self.edges)
        if edges is not None and missing:
            raise ValueError(f"no vertex_edges file for splits {sorted(missing)}")

    def make_dataset(self, name: str, path: Path) -> Dataset:
        mixed = MIXED_SLICES if name == "train" else 1
        return FlavourBatches(path, self.edges.get(name), self.batch_size, mixed, seed=self.seed)


def class_counts(path: str | Path) -> np.ndarray:
    """Jets per class (b, c, light) of a track_graphs file."""
    with h5py.File(path, "r") as f:
        classes = flavour_classes(f["jets"]["flavour"][:])
    return np.bincount(classes, minlength=len(CLASSES))
