"""The super-resolution study's DataModule: the dense batches of ``batches.SuperResolutionBatches``
as tensors, each split from one or more files (the study trains on its pflow and its pi0
sample together), the training batches in a seeded new order every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset

from pipeline.ml.data import EpochShuffle, PrebatchedDataModule
from pipeline.seeds import derive_seed
from pipeline.studies.super_resolution.batches import SuperResolutionBatches


class SuperResolutionDataset(SuperResolutionBatches, Dataset):
    """``SuperResolutionBatches`` whose arrays are tensors (the evaluation's ``fine_charged``, ``fine_neutral``
    and per-event ``events`` stay NumPy: no network reads them)."""

    def __getitem__(self, index: int) -> dict[str, object]:
        batch = super().__getitem__(index)
        batch["coarse"] = [torch.from_numpy(image) for image in batch["coarse"]]
        for key in ("track", "fine", "row"):
            batch[key] = torch.from_numpy(batch[key])
        return batch


def _files(split: str, paths: str | Path | Sequence[str | Path]) -> list[Path]:
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not files:
        raise ValueError(f"SuperResolutionDataModule: no particle_flow_images file for split {split!r}")
    return files


class SuperResolutionDataModule(PrebatchedDataModule):
    """Train / val (/ test) batches of particle_flow_images files, several per split (their
    batches one after the other, a ConcatDataset); the training batches of all files in a
    seeded new order every epoch (``EpochShuffle``), the others in file order. ``paths``:
    {split: [path, ...]} (one path is taken as a list of one). Every file must have the
    geometry (layer shapes, fine cells) of the first train file: ValueError naming the one that does not."""

    def __init__(self, paths: Mapping[str, str | Path | Sequence[str | Path]], batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, name: str = "super_resolution"):
        super().__init__()
        missing = {"train", "val"} - set(paths)
        if missing:
            raise ValueError(f"SuperResolutionDataModule: no particle_flow_images file for splits {sorted(missing)}")
        self.paths = {split: _files(split, p) for split, p in paths.items()}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.name = name
        self.datasets: dict[str, ConcatDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, files in self.paths.items():
            if split not in self.datasets:
                self.datasets[split] = ConcatDataset([SuperResolutionDataset(path, self.batch_size) for path in files])
        reference = self.datasets["train"].datasets[0]
        for dataset in self.datasets.values():
            for part in dataset.datasets:
                if (part.shapes, part.fine) != (reference.shapes, reference.fine):
                    raise ValueError(f"{part.path}: layer shapes {part.shapes} at fine {part.fine}, but "
                                     f"{reference.path} has {reference.shapes} at fine {reference.fine}; "
                                     "expected files of one detector")

    def train_sampler(self, dataset: ConcatDataset) -> EpochShuffle:
        return EpochShuffle(len(dataset), derive_seed(self.seed, "super_resolution", self.name, "batches"))
