"""Streaming jet images from jet_images files, for the taggers and the autoencoders.

A batch is a contiguous slice of rows of a jet_images file (the files are shuffled in
rounds when they are written, so any slice mixes both classes), read in one go. Only the
batch boundaries are kept in memory, so memory stays flat however large the file is.

* Normalisation: the model input is the image divided by its pixel sum (each image sums
  to 1), so the networks see shapes, not the jet's energy scale.
* Class selection: the autoencoder trains on QCD only, the inverse autoencoder on top
  only. The batch boundaries are then placed so that every batch holds ``batch_size``
  jets of the selected class (the last one the rest).
* Noise (the denoising autoencoder): Gaussian pixel noise and soft pile-up-like deposits
  are added to the GeV image before normalising; a batch then carries the noisy input
  and the clean target. The noise of row r is a function of the noise seed, r and an
  epoch number only (blocks of NOISE_BLOCK rows share one generator), never of the batch
  size, the order or the DataLoader workers: the validation and test noise is the same
  on every pass and in every program, the training noise is redrawn every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from pipeline.io.hdf5 import RaggedReader
from pipeline.ml.data import EpochShuffle, FileBatches, PrebatchedDataModule
from pipeline.seeds import derive_seed
from pipeline.studies.jet_images.formats import jet_images_schema

#: Rows read at once when counting classes and when streaming a file for evaluation.
ROWS_PER_READ = 4096
#: Rows that share one noise generator; the noise of a row depends only on its block.
NOISE_BLOCK = 256


def noise_seed(global_seed: int, split: str) -> int:
    """The seed of the noise added to the images of one split (train, val, test): the
    same for every model, so the denoiser and the tagger see the same noisy test set."""
    return derive_seed(global_seed, "jet_images", "noise", split)


def add_noise(images: np.ndarray, rng: np.random.Generator, noise_sigma: float, pileup_deposits: float,
              pileup_energy: float) -> np.ndarray:
    """Images with detector-like noise added (a new float32 array; the input is untouched).

    images: (n, pixels, pixels) transverse energies [GeV]. Every pixel gets Gaussian noise
    of ``noise_sigma`` GeV; every image gets a Poisson(``pileup_deposits``) number of soft
    deposits, each in a uniformly random pixel with an exponentially distributed E_T of
    mean ``pileup_energy`` GeV (two deposits in one pixel add up).
    """
    images = np.asarray(images, np.float32)
    n, height, width = images.shape
    noisy = images + rng.normal(0.0, noise_sigma, images.shape).astype(np.float32)
    deposits = rng.poisson(pileup_deposits, n)
    owner = np.repeat(np.arange(n), deposits)
    pixel = rng.integers(0, height * width, len(owner))
    energy = rng.exponential(pileup_energy, len(owner))
    pileup = np.bincount(owner * (height * width) + pixel, energy, n * height * width)
    return noisy + pileup.reshape(images.shape).astype(np.float32)


def row_noise(start: int, stop: int, pixels: int, settings: Mapping[str, float], seed: int,
              epoch: int = 0) -> np.ndarray:
    """The additive noise (stop - start, pixels, pixels) [GeV] of rows [start, stop) of a
    file: ``add_noise`` on empty images, one generator per block of NOISE_BLOCK rows
    seeded by (seed, epoch, block), so any slice of the rows gets the same noise."""
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    empty = np.zeros((NOISE_BLOCK, pixels, pixels), np.float32)
    blocks = [add_noise(empty, np.random.default_rng([seed, epoch, block]), settings["noise_sigma"],
                        settings["pileup_deposits"], settings["pileup_energy"])
              for block in range(first, last + 1)]
    offset = first * NOISE_BLOCK
    return np.concatenate(blocks)[start - offset : stop - offset]


def normalise_images(images: np.ndarray) -> np.ndarray:
    """Each image (n, pixels, pixels) divided by its pixel sum, so that it sums to 1; an
    image whose sum is not positive (empty, or only negative noise) is left unchanged."""
    total = images.sum(axis=(1, 2), keepdims=True)
    return images / np.where(total > 0, total, np.ones_like(total))


def batch_boundaries(reader: RaggedReader, batch_size: int, select: int | None = None) -> tuple[np.ndarray, int]:
    """Row boundaries (n_batches + 1,) of the batches of an open jet_images file, and the
    number of jets they hold: batch i is rows [b[i], b[i + 1]) and holds ``batch_size``
    jets of label ``select`` (of any label when None), the last one the rest. The labels
    are read in chunks of ROWS_PER_READ rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n_rows = reader.n_rows("jets")
    stops, seen = [np.zeros(0, np.int64)], 0
    for start in range(0, n_rows, ROWS_PER_READ):
        labels = reader.read("jets", ["label"], start, start + ROWS_PER_READ)["label"]
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{reader.path}: labels other than 0 (QCD) and 1 (top) in rows {start}-"
                             f"{start + len(labels) - 1}: {sorted(set(labels.tolist()) - {0, 1})}")
        wanted = np.ones(len(labels), bool) if select is None else labels == select
        count = seen + np.cumsum(wanted)
        # The row that completes a batch of batch_size wanted jets ends that batch.
        stops.append(start + 1 + np.flatnonzero(wanted & (count % batch_size == 0)))
        seen = int(count[-1])
    if seen == 0:
        what = "jets" if select is None else f"jets with label {select}"
        raise ValueError(f"{reader.path}: no {what} to stream")
    stops = np.concatenate(stops)
    if seen % batch_size:
        stops = np.r_[stops, n_rows]
    return np.r_[0, stops].astype(np.int64), seen


class JetImageBatches(FileBatches):
    """Item i: batch i of a jet_images file (rows ``boundaries[i]:boundaries[i + 1]``).

    An item is a dict of tensors: ``image`` (n, pixels, pixels) float32, the model input
    (normalised if ``normalise``; noisy if ``noise``), ``label`` (n,) float32 (1 top,
    0 QCD), ``row`` (n,) int64 rows in the file, and with noise ``target``: the clean
    image, normalised alike. ``select``: keep only the jets of that label. ``noise``: the
    jet_images.denoising settings (noise_sigma, pileup_deposits, pileup_energy [GeV]),
    drawn with ``noise_seed``; an index (i, epoch) instead of i draws that epoch's noise.
    """

    def __init__(self, path: str | Path, pixels: int, batch_size: int, normalise: bool = True,
                 select: int | None = None, noise: Mapping[str, float] | None = None, noise_seed: int = 0):
        self.path = Path(path)
        self.pixels = pixels
        if select not in (None, 0, 1):
            raise ValueError(f"select must be None, 0 (QCD) or 1 (top), got {select!r}")
        with RaggedReader(self.path, jet_images_schema(pixels)) as reader:  # checks schema and version
            shape = reader.read("jets", ["image"], 0, 0)["image"].shape[1:]
            if shape != (pixels, pixels):
                raise ValueError(f"{self.path}: images of {shape[0]} x {shape[1]} pixels, but "
                                 f"jet_images.pixels is {pixels}")
            #: Rows where the batches start and end, and the jets they hold (per pass).
            self.boundaries, self.n_jets = batch_boundaries(reader, batch_size, select)
        self.normalise = normalise
        self.select = select
        self.noise = dict(noise) if noise is not None else None
        self.noise_seed = noise_seed

    def __len__(self) -> int:
        return len(self.boundaries) - 1

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = index if isinstance(index, tuple) else (index, 0)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, stop = int(self.boundaries[index]), int(self.boundaries[index + 1])
        with self._reading(f"jets {start}:{stop}"):
            jets = self._open()["jets"]
            clean = jets["image"][start:stop].astype(np.float32)
            labels = jets["label"][start:stop]
        keep = np.arange(stop - start) if self.select is None else np.flatnonzero(labels == self.select)
        batch = {"label": torch.from_numpy(labels[keep].astype(np.float32)),
                 "row": torch.from_numpy(start + keep.astype(np.int64))}
        prepare = normalise_images if self.normalise else np.asarray
        if self.noise is None:
            batch["image"] = torch.from_numpy(prepare(clean[keep]))
            return batch
        noisy = clean[keep] + row_noise(start, stop, self.pixels, self.noise, self.noise_seed, epoch)[keep]
        batch["image"] = torch.from_numpy(prepare(noisy))
        batch["target"] = torch.from_numpy(prepare(clean[keep]))
        return batch


class JetImageDataModule(PrebatchedDataModule):
    """Train / val (/ test) batches of jet images; the training batches come in a seeded
    new order every epoch (``EpochShuffle``), the others in file order.

    paths: {split: jet_images file}; pixels: jet_images.pixels; seed: the config's global
    seed (the batch order derives from it and ``name``, the noise of each split from it
    and the split, see ``noise_seed``); select, noise, normalise: see JetImageBatches.
    """

    def __init__(self, paths: Mapping[str, str | Path], pixels: int, batch_size: int = 256, num_workers: int = 0,
                 seed: int = 0, name: str = "images", normalise: bool = True, select: int | None = None,
                 noise: Mapping[str, float] | None = None):
        super().__init__()
        missing = {"train", "val"} - set(paths)
        if missing:
            raise ValueError(f"JetImageDataModule: no jet_images file for splits {sorted(missing)}")
        self.paths = {split: Path(p) for split, p in paths.items()}
        self.pixels = pixels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.name = name
        self.normalise = normalise
        self.select = select
        self.noise = noise
        self.datasets: dict[str, JetImageBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.paths.items():
            if split not in self.datasets:
                self.datasets[split] = JetImageBatches(path, self.pixels, self.batch_size, self.normalise,
                                                       self.select, self.noise, noise_seed(self.seed, split))

    def train_sampler(self, dataset: JetImageBatches) -> EpochShuffle:
        return EpochShuffle(len(dataset), derive_seed(self.seed, "jet_images", self.name, "batches"), with_epoch=True)


def iterate_images(path: str | Path, pixels: int, normalise: bool = True, noise: Mapping[str, float] | None = None,
                   seed: int = 0, split: str = "test", rows: int = ROWS_PER_READ) -> Iterator[dict[str, np.ndarray]]:
    """The jets of a file in order, ``rows`` at a time, as numpy arrays (the items of
    JetImageBatches). With ``noise``, the noise is that of ``split`` derived from
    ``seed``, the config's global seed, as in training. Memory: one chunk."""
    batches = JetImageBatches(path, pixels, rows, normalise, None, noise, noise_seed(seed, split))
    for index in range(len(batches)):
        yield {key: value.numpy() for key, value in batches[index].items()}
