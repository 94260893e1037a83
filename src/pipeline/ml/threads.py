"""The CPU threads torch runs a step on: from the config, never from the cores the job is
given. A network's sums (convolutions, matrix products) are split across threads, so the
same weights on the same inputs give results that differ in their last digits on another
number of threads; a fixed count makes a step's outputs the same on any machine and under
any ``--cores``. (Snakemake caps a job's threads at ``--cores``; torch then runs more threads
than cores, which costs time, not bits.)"""

from __future__ import annotations

from typing import Mapping

import torch


def use_threads(count: int) -> None:
    """Run torch's CPU operations of this process on ``count`` threads."""
    torch.set_num_threads(count)


def use_evaluation_threads(config: Mapping) -> None:
    """The threads of a step that runs trained networks: ``evaluation.threads``."""
    use_threads(config["evaluation"]["threads"])
