"""Reading checkpoints without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary file runs whatever callables it
names: a crafted ``--checkpoint`` file would execute code in every job that reads it.
Ours hold only tensors and plain data (numbers, strings, lists, dicts: weights, optimiser
and loop states, hyperparameters, the random streams, the MLflow run id), so every read
goes through torch's restricted unpickler (``weights_only=True``), which refuses any other
global before it is called. Nothing here imports Lightning: the run-id lookup of a
command that trains nothing stays cheap.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch

from pipeline.io.outputs import atomic_output
from pipeline.ml.memory_format import channels_last

#: Key under which the MLflow run id of the training is stored in an exported checkpoint,
#: so that downstream runs (evaluations, the flavour tagger) can name the run they used.
RUN_ID_KEY = "mlflow_run_id"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or is not what the command expects; the
    message names the file."""


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    # A global the restricted unpickler refused ("Unsupported global: GLOBAL posix.system ..."),
    # or bytes that are no checkpoint at all.
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if found:
        return CheckpointError(
            f"{path}: refused to load: the checkpoint holds objects other than tensors and plain data (it names "
            f"{found.group(1)}); unpickling it would run code it contains. Checkpoints written by "
            "`pipeline train-*` never do: use one of those, or retrain")
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def check_checkpoint_names(checkpoints: Iterable[str], names: Sequence[str], command: str) -> None:
    """ValueError naming ``command`` unless ``checkpoints`` (their methods) are exactly ``names``."""
    missing = [n for n in names if n not in checkpoints]
    extra = sorted(set(checkpoints) - set(names))
    if missing or extra:
        raise ValueError(f"{command}: needs a checkpoint for exactly {list(names)}; missing {missing}, "
                         f"unexpected {extra}")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """The contents of a checkpoint file, read with torch's restricted unpickler.

    Raises CheckpointError naming the file if it is missing, not a torch checkpoint, or
    holds anything but tensors and plain data (then nothing in it has run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, or KeyError, EOFError, RuntimeError... on garbage bytes
        raise _unreadable(path, err) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a checkpoint dict")
    return state


def load_module(module_class, path: str | Path):
    """A LightningModule of ``module_class`` restored from a checkpoint on the CPU;
    CheckpointError naming the file if it is unsafe or unreadable (``load_checkpoint``
    reads it first: a few MB, read twice) or of another model."""
    state = load_checkpoint(path)
    if "state_dict" not in state or "hyper_parameters" not in state:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict or hyper_parameters)")
    try:
        module = module_class.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    except (TypeError, KeyError, RuntimeError) as err:
        # Another model's hyperparameters (TypeError) or weights (RuntimeError: missing keys).
        raise CheckpointError(f"{path}: not a {module_class.__name__} checkpoint: {str(err).splitlines()[0]}") from None
    return channels_last(module)


def checkpoint_run_id(path: str | Path) -> str:
    """The MLflow run id stored in a checkpoint written by ``fit_and_export``."""
    state = load_checkpoint(path)
    if RUN_ID_KEY not in state:
        raise CheckpointError(f"{path}: no {RUN_ID_KEY!r} in the checkpoint; was it written by `pipeline train-*`?")
    return str(state[RUN_ID_KEY])


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write a checkpoint atomically. Serialised in memory first: torch's own writer turns
    a full disk into "enforce fail at inline_container.cc", a plain write into an OSError
    that names the file and the cause (checkpoints are megabytes)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)
