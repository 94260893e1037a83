"""Streaming batches of track sets from track_graphs files, for Lightning.

A batch is a contiguous slice of jets (the files are ordered by track count, so a slice
needs little padding), read in one go and padded to (jets, max tracks, features) with a
mask. Each DataLoader worker opens the file lazily; only the batch boundaries are kept in
memory, so memory stays flat however large the file is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.io.hdf5 import RaggedReader
from pipeline.ml.data import FileBatches, PrebatchedDataModule, ReplayedRandomOrder
from pipeline.studies.vertexing.formats import TRACK_FEATURES, TRACK_GRAPHS


def pad_tracks(features: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> dict[str, torch.Tensor]:
    """Pad ragged tracks into dense tensors.

    features: (n_tracks, F); labels: (n_tracks,); offsets: (n_jets + 1,) starting at 0.
    Returns x (n_jets, N, F) float32, mask (n_jets, N) bool, vertex (n_jets, N) int64
    with -1 on padding, n_tracks (n_jets,), where N is the largest jet of the batch.
    """
    n = np.diff(offsets)
    n_jets, width = len(n), int(n.max(initial=0))
    jet = np.repeat(np.arange(n_jets), n)
    position = np.arange(len(labels)) - offsets[jet]
    x = np.zeros((n_jets, width, features.shape[1]), np.float32)
    x[jet, position] = features
    vertex = np.full((n_jets, width), -1, np.int64)
    vertex[jet, position] = labels
    return {
        "x": torch.from_numpy(x),
        "mask": torch.from_numpy(vertex >= 0),
        "vertex": torch.from_numpy(vertex),
        "n_tracks": torch.from_numpy(n.astype(np.int64)),
    }


class TrackGraphBatches(FileBatches):
    """Item i is batch i: jets [i * batch_size, (i + 1) * batch_size) of a track_graphs file."""

    def __init__(self, path: str | Path, batch_size: int):
        self.path = Path(path)
        self.batch_size = batch_size
        with RaggedReader(self.path, TRACK_GRAPHS) as reader:  # checks schema and version
            self.n_jets = reader.n_rows("jets")
            # Training-split statistics (F,): raw features = x * feature_std + feature_mean.
            self.feature_mean = reader.attrs["feature_mean"]
            self.feature_std = reader.attrs["feature_std"]
        self.n_features = len(TRACK_FEATURES)

    def __len__(self) -> int:
        return math.ceil(self.n_jets / self.batch_size)

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` as stored: ``offsets`` (n_jets + 1,) from 0 into its tracks'
        ``features`` (n_tracks, F) and ``vertex`` labels (n_tracks,), the jets' ``flavour``
        codes (n_jets,) and their rows in the file, ``jets`` (n_jets,)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.n_jets)
        with self._reading(f"jets {start}:{stop}"):
            offsets = self._dataset("tracks/offsets")[start : stop + 1]
            t0, t1 = int(offsets[0]), int(offsets[-1])
            return {"offsets": offsets - offsets[0], "jets": np.arange(start, stop, dtype=np.int64),
                    "features": self._dataset("tracks/features")[t0:t1],
                    "vertex": self._dataset("tracks/vertex")[t0:t1], "flavour": self._dataset("jets/flavour")[start:stop]}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        part = self.read(index)
        batch = pad_tracks(part["features"], part["vertex"], part["offsets"])
        batch["flavour"] = torch.from_numpy(part["flavour"].astype(np.int64))
        batch["jet_index"] = torch.from_numpy(part["jets"])
        return batch


class TrackGraphDataModule(PrebatchedDataModule):
    """Train / val / test batches of track sets; the training batch order is reshuffled
    every epoch from a seeded generator."""

    def __init__(self, paths: Mapping[str, str | Path], batch_size: int = 256, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.paths = {name: Path(p) for name, p in paths.items()}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, TrackGraphBatches] = {}

    def make_dataset(self, name: str, path: Path) -> Dataset:
        """The batches of one split; studies that add inputs to the track sets override this."""
        return TrackGraphBatches(path, self.batch_size)

    def setup(self, stage: str | None = None) -> None:
        for name, path in self.paths.items():
            if name not in self.datasets:
                self.datasets[name] = self.make_dataset(name, path)

    def train_sampler(self, dataset: Dataset) -> ReplayedRandomOrder:
        return ReplayedRandomOrder(len(dataset), self.seed)
