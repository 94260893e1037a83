"""The particle-flow study's DataModule: the dense batches of ``batches.ImageBatches`` as
tensors, the training batches in a seeded new order every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch.utils.data import Dataset

from pipeline.ml.data import EpochShuffle, PrebatchedDataModule
from pipeline.seeds import derive_seed
from pipeline.studies.particle_flow.batches import ImageBatches


class ParticleFlowBatches(ImageBatches, Dataset):
    """``ImageBatches`` whose arrays are tensors (the per-event ``events`` of an evaluation
    batch and its ``cluster`` labels stay NumPy: no network reads them)."""

    def __getitem__(self, index: int) -> dict[str, object]:
        batch = super().__getitem__(index)
        for key in ("layers", "fraction", "weight"):
            batch[key] = [torch.from_numpy(image) for image in batch[key]]
        batch["track"] = torch.from_numpy(batch["track"])
        batch["row"] = torch.from_numpy(batch["row"])
        return batch


class ParticleFlowDataModule(PrebatchedDataModule):
    """Train / val (/ test) batches of particle_flow_images files; the training batches in a
    seeded new order every epoch (``EpochShuffle``), the others in file order."""

    def __init__(self, paths: Mapping[str, str | Path], batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 name: str = "particle_flow"):
        super().__init__()
        missing = {"train", "val"} - set(paths)
        if missing:
            raise ValueError(f"ParticleFlowDataModule: no particle_flow_images file for splits {sorted(missing)}")
        self.paths = {split: Path(p) for split, p in paths.items()}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.name = name
        self.datasets: dict[str, ParticleFlowBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.paths.items():
            if split not in self.datasets:
                self.datasets[split] = ParticleFlowBatches(path, self.batch_size)

    def train_sampler(self, dataset: ParticleFlowBatches) -> EpochShuffle:
        return EpochShuffle(len(dataset), derive_seed(self.seed, "particle_flow", self.name, "batches"))
