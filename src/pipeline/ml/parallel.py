"""Data-parallel training: which process this is, how the processes start and talk, and
how they share the batches.

A training with ``training.devices`` N and ``training.num_nodes`` M runs as N x M processes
(ranks) with PyTorch's DistributedDataParallel: each rank takes its share of every epoch's
batches, the gradients are averaged over the ranks before every optimiser step, and rank 0
alone writes (checkpoint, history, MLflow). One step of W ranks with a batch each equals one
step of one process that accumulates the same W batches (``training.accumulate_batches``):
both average the W batches' gradients.

The ranks start either from Lightning (``launcher: lightning``: the process the job runs
starts N - 1 copies of its own command line on the same machine) or from Slurm
(``launcher: srun``: the job runs ``srun``, which starts one task per rank on every node);
every rank runs the whole command, so everything before the fit is done by each of them.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Mapping, Sequence

#: Where rank-dependent choices look for the rank before the processes are connected: set by
#: Lightning's launcher for the copies it starts (and by torchrun), by Slurm for srun's tasks.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK")


def world_size(settings: Mapping) -> int:
    """The processes of one training: ``devices`` per node x ``num_nodes``."""
    return settings["devices"] * settings["num_nodes"]


def process_rank(launcher: str = "lightning") -> int:
    """This process's rank among a training's, from the environment (0 when alone). Under
    ``launcher: lightning`` Slurm's task id is not a rank: the job is one Slurm task."""
    names = RANK_VARIABLES if launcher == "srun" else ("RANK", "LOCAL_RANK")
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def check_launch(settings: Mapping) -> None:
    """ValueError naming the setting unless this process can train as ``settings`` (the
    config's ``training`` section) says, before any work: 16-bit mixed precision needs a
    GPU here, and under ``launcher: srun`` the Slurm job step must have one task per rank.
    (What the config alone decides, ``pipeline.config.check_training_settings`` refused.)"""
    world = world_size(settings)
    if settings["precision"] == "16-mixed" and settings["accelerator"] != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("training.precision: 16-mixed runs on GPUs only, and this machine has none that torch "
                             "can use; use bf16-mixed on a CPU")
    if settings["launcher"] == "srun" and world > 1:
        tasks = os.environ.get("SLURM_NTASKS")
        if tasks is None:
            raise ValueError("training.launcher: srun, but this process is not a Slurm task (no SLURM_NTASKS): run "
                             "the training through a Slurm profile, or set training.launcher: lightning")
        if int(tasks) != world:
            raise ValueError(f"training: devices x num_nodes = {settings['devices']} x {settings['num_nodes']} = "
                             f"{world} processes, but the Slurm job step has SLURM_NTASKS={tasks} tasks")


def build_strategy(settings: Mapping):
    """Lightning's strategy for ``settings`` (the config's ``training`` section): "auto"
    (one process) unless there are several ranks or ``strategy: ddp``; then DDP, whose
    backend Lightning picks by device (gloo on CPUs, NCCL on GPUs), with the cluster
    environment of the launcher (Slurm's own requeueing off: a stopped training resumes
    when the workflow runs it again, ``pipeline.ml.resume``)."""
    if world_size(settings) == 1 and settings["strategy"] == "auto":
        return "auto"
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    environment = SLURMEnvironment(auto_requeue=False) if settings["launcher"] == "srun" else LightningEnvironment()
    return DDPStrategy(cluster_environment=environment)


def follow_launcher() -> None:
    """In a rank that Lightning's launcher started (LOCAL_RANK > 0), die
    with the launching process: left alone, a rank whose launcher was killed (a kill
    signal, a time limit) would wait in its next collective until the process group's
    time-out, half an hour. Linux only (prctl); elsewhere nothing is done."""
    if os.environ.get("LOCAL_RANK", "0") == "0":  # the launcher itself, or a task srun started
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def rank_share(indices: Sequence[int], rank: int, world: int, equal: bool) -> list[int]:
    """Rank ``rank``'s share of ``indices`` (W = ``world`` ranks): every W-th item from
    position ``rank``. With ``equal`` every rank gets ceil(n / W) items, the list wrapped
    around from its start (as torch's DistributedSampler pads), so that every rank takes
    the same number of optimiser steps (DDP's collectives need it); without, the shares
    differ by at most one (validation: no batch counted twice)."""
    items = list(indices)
    if world == 1:
        return items
    if equal and items:
        total = -(-len(items) // world) * world
        items = (items * (total // len(items) + 1))[:total]
    return items[rank::world]
