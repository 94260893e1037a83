"""Where a running training keeps what it needs to resume after a kill (SIGKILL, a Slurm
time limit): its epoch checkpoints, its MLflow run id and a fingerprint of what it trains."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Mapping

from pipeline.config import without_bookkeeping
from pipeline.io.outputs import atomic_output

log = logging.getLogger(__name__)


class ResumeState:
    """The working directory of one training, outside Snakemake's outputs (Snakemake
    deletes the outputs of a job it reruns as incomplete, not this): the Trainer's
    ``checkpoints/last.ckpt`` and ``best.ckpt``, the MLflow run id and a fingerprint of
    what is being trained (config, parameters, input checksums). A rerun of the same
    training resumes from ``last.ckpt``; a rerun of a changed one discards the directory
    and starts over.

    directory: ``<training.resume_dir>/<checkpoint stem>-<hash of its absolute path>``.
    """

    def __init__(self, resume_dir: str | Path, checkpoint: str | Path, fingerprint: str):
        checkpoint = Path(checkpoint).resolve()
        key = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]
        self.directory = Path(resume_dir).resolve() / f"{checkpoint.stem}-{key}"
        self.checkpoints = self.directory / "checkpoints"
        self.fingerprint = fingerprint

    @staticmethod
    def fingerprint_of(config: Mapping, params: Mapping, tags: Mapping[str, str]) -> str:
        """What is trained: the config without its bookkeeping (a new tracking URI does not
        restart a training), the run's parameters, the checksums of its inputs."""
        inputs = {k: v for k, v in tags.items() if k.endswith(".sha256")}
        text = json.dumps({"config": without_bookkeeping(config), "params": params, "inputs": inputs},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, name: str) -> Path:
        return self.directory / name

    def last_checkpoint(self, discard_stale: bool = True) -> Path | None:
        """``last.ckpt`` of an interrupted run of this same training, else None. A stale
        directory, of another config or other inputs, is removed if ``discard_stale`` (the
        ranks of a data-parallel training but the first only read)."""
        stamp = self._file("fingerprint")
        try:
            current = stamp.read_text() == self.fingerprint
        except FileNotFoundError:
            return None
        if not current:
            if discard_stale:
                log.warning("%s holds an interrupted training of another config or other inputs; starting over",
                            self.directory)
                shutil.rmtree(self.directory)
            return None
        last = self.checkpoints / "last.ckpt"
        return last if last.exists() else None

    def run_id(self) -> str | None:
        path = self._file("mlflow_run_id")
        return path.read_text().strip() if path.exists() else None

    def start(self, run_id: str) -> None:
        """Record the fingerprint and the MLflow run of this training (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in (("fingerprint", self.fingerprint), ("mlflow_run_id", run_id)):
            with atomic_output(self._file(name)) as tmp:
                Path(tmp).write_text(text)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        try:  # the resume_dir itself too, once no training is left in it
            self.directory.parent.rmdir()
        except OSError:
            pass
