"""The loaders every study's DataModule shares: datasets that yield whole batches from a
file, and batch orders that are a function of (seed, epoch), so a resumed training repeats them."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.io.hdf5 import LazyFile
from pipeline.ml.parallel import rank_share


class FileBatches(LazyFile, Dataset):
    """The base of a Dataset that reads its batches from one HDF5 file ``self.path``,
    opened lazily in each DataLoader worker (``pipeline.io.hdf5.LazyFile``)."""


class PrebatchedDataModule(pl.LightningDataModule):
    """The loaders of a DataModule whose datasets yield whole batches (``self.datasets``
    {split: Dataset}, filled by the subclass's ``setup``): batch_size None, workers kept
    alive between epochs, pinned memory on a GPU; the training batches in the order of
    ``train_sampler`` (each study's own seeded shuffle), the others in file order. The
    subclass sets ``seed`` (the loaders' own random stream, for worker seeds).

    In a data-parallel training of W ranks every rank builds the same orders and takes
    its share (``pipeline.ml.parallel.rank_share``): of the training batches the same number
    per rank (the order wrapped around), of the others every W-th batch."""

    num_workers: int = 0
    seed: int = 0

    def train_sampler(self, dataset):
        """The order of the training batches (None: file order)."""
        return None

    def _ranks(self) -> tuple[int, int]:
        """(this rank, the ranks) of the Trainer that fits this DataModule; (0, 1) outside one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, sampler=None):
        rank, world = self._ranks()
        if world > 1:
            dataset = self.datasets[split]
            if len(dataset) < world:
                # A rank without a batch would wait for the others' reductions forever.
                raise ValueError(f"{getattr(dataset, 'path', split)}: the {split} split has {len(dataset)} batches, "
                                 f"fewer than the {world} processes of the data-parallel training; use a smaller "
                                 "training.batch_size or fewer training.devices")
            sampler = FileOrder(len(dataset)) if sampler is None else sampler
            sampler = sampler.shard(rank, world, equal=split == "train")
        # An own generator for the loader's base seed: left to the global stream, every new
        # iterator would draw from it, and when Lightning makes one differs on resuming.
        return DataLoader(self.datasets[split], batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self):
        return self._loader("train", self.train_sampler(self.datasets["train"]))

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")


class FileOrder(Sampler):
    """Batch indices ``0..n-1`` in file order, or a rank's share of them (``shard``).
    The base of the seeded orders below, whose ``order`` is a function of the epoch."""

    def __init__(self, n_batches: int):
        self.n_batches = n_batches
        self.rank, self.world, self.equal = 0, 1, False

    def shard(self, rank: int, world: int, equal: bool) -> "FileOrder":
        """This sampler, yielding rank ``rank``'s share of every order among ``world`` ranks
        (``rank_share``; ``equal``: as many for every rank). Returns itself."""
        self.rank, self.world, self.equal = rank, world, equal
        return self

    def order(self, epoch: int) -> list[int]:
        return list(range(self.n_batches))

    def share(self, epoch: int) -> list[int]:
        """The batch indices this rank reads in ``epoch``."""
        return rank_share(self.order(epoch), self.rank, self.world, self.equal)

    def __len__(self) -> int:
        return len(rank_share(range(self.n_batches), self.rank, self.world, self.equal))

    def __iter__(self):
        return iter(self.share(0))


class EpochShuffle(FileOrder):
    """Batch indices ``0..n-1`` in a new seeded order every epoch: epoch e's order is a
    function of (seed, e) only. Lightning calls ``set_epoch`` before every epoch, so a
    training resumed from a checkpoint repeats the orders of the uninterrupted one.
    Without ``set_epoch`` each iteration is the next epoch. With ``with_epoch`` the items
    are (index, epoch) pairs, for datasets that draw per-epoch noise. Sharded, every rank
    draws the same order and reads its share."""

    def __init__(self, n_batches: int, seed: int, with_epoch: bool = False):
        super().__init__(n_batches)
        self.seed = seed
        self.with_epoch = with_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_batches).tolist()

    def __iter__(self):
        # A generator: the epoch is read at the first batch, not when the iterator is
        # made; Lightning makes the first one before it calls set_epoch (of the resumed epoch).
        epoch, self.epoch = self.epoch, self.epoch + 1
        for index in self.share(epoch):
            yield (index, epoch) if self.with_epoch else index


class ReplayedRandomOrder(EpochShuffle):
    """The orders of torch's ``RandomSampler(generator=Generator().manual_seed(seed))``
    under Lightning, epoch after epoch (one permutation drawn per epoch: Lightning stops
    at the loader's length, before the sampler draws its second, empty one), but
    recomputed from the seed for any epoch, so that ``set_epoch`` can resume them."""

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch):
            torch.randperm(self.n_batches, generator=generator)
        return torch.randperm(self.n_batches, generator=generator).tolist()
