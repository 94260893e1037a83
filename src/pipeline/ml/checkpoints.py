"""Reading checkpoints without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary file runs whatever callables it
names: a crafted ``--checkpoint`` file would execute code in every job that reads it.
Ours hold only tensors and plain data (numbers, strings, lists, dicts: weights, optimiser
and loop states, hyperparameters, the random streams, the MLflow run id), so every read
goes through torch's restricted unpickler (``weights_only=True``), which refuses any other
global before it is called. Nothing here imports Lightning: the run-id lookup of a
command that trains nothing stays cheap.

Every checkpoint a training exports records what it is (``IDENTITY_KEY``: the study, the
method, the settings its network was built with, and what else its inputs were, e.g. a
flavour tagger's vertex finder); every step that reads one compares that record with
what its command line and config say it is (``check_identity``), so a checkpoint given
under another name, or built with other widths than the config's, is refused before any
work instead of giving numbers that the outputs attribute to the config.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from pipeline.io.outputs import atomic_output
from pipeline.ml.memory_format import channels_last

#: Key under which the MLflow run id of the training is stored in an exported checkpoint,
#: so that downstream runs (evaluations, the flavour tagger) can name the run they used.
RUN_ID_KEY = "mlflow_run_id"
#: Key under which an exported checkpoint records what it is (``checkpoint_identity``).
IDENTITY_KEY = "pipeline_identity"
#: How to make a checkpoint that passes these checks (named in the refusals).
TRAIN_COMMAND = "`pipeline <study> train`"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or is not what the command expects; the
    message names the file."""


def _pickled_globals(path: Path) -> list[str] | None:
    """The globals (``module.name``) that the pickles of a checkpoint name, read with
    pickletools, which parses opcodes and calls nothing; None if the file holds no pickle.
    A zip checkpoint's pickle is its ``data.pkl``; a legacy (non-zip) one, or a bare
    pickle, is a sequence of pickles followed by raw tensor bytes, where parsing stops."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                streams = [io.BytesIO(archive.read(names[0]))] if names else []
        else:
            streams = [io.BytesIO(path.read_bytes())]
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    found: list[str] = []
    parsed = False
    for stream in streams:
        while stream.tell() < len(stream.getbuffer()):
            strings, memo = [], {}
            try:
                for opcode, arg, _ in pickletools.genops(stream):
                    if opcode.name in ("GLOBAL", "INST"):
                        found.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str) and "UNICODE" in opcode.name:
                        strings.append(arg)
                    elif opcode.name == "MEMOIZE" and strings:
                        memo[len(memo)] = strings[-1]
                    elif opcode.name.endswith("GET") and memo.get(arg) is not None:
                        strings.append(memo[arg])
            except Exception:  # the raw tensor bytes after a legacy checkpoint's pickles, or no pickle at all
                break
            parsed = True
    return list(dict.fromkeys(found)) if parsed else None


def _allowed_globals() -> set[str]:
    """The globals torch's restricted unpickler accepts (tensors, storages, OrderedDict...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except (ImportError, AttributeError):  # a private helper: without it every non-torch global counts
        return set()


def _refused_code(path: Path, names: Sequence[str]) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: the checkpoint holds objects other than tensors and plain data (it names "
        f"{', '.join(names)}); unpickling it would run code it contains. Checkpoints written by "
        f"{TRAIN_COMMAND} never do: use one of those, or retrain")


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    # A global the restricted unpickler refused ("Unsupported global: GLOBAL posix.system ..."),
    # or bytes that are no checkpoint at all.
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if found:
        return _refused_code(path, [found.group(1)])
    text = str(err)
    refused = "Weights only load failed" in text
    # An opcode it does not take (a pickle of protocol 4 or 5, as pickle.dump and some legacy
    # torch.save files write): whether that pickle would run code is in the globals it names.
    named = _pickled_globals(path) if refused else None
    allowed = _allowed_globals()
    foreign = [g for g in named or [] if g not in allowed and not g.startswith("torch.")]
    if foreign:
        return _refused_code(path, foreign)
    # torch's own text advises weights_only=False, which would run whatever the file holds:
    # only the restricted unpickler's reason is kept.
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = reason.group(1).strip() if reason else (text.splitlines()[0] if text else "")
    if named is not None:
        return CheckpointError(f"{path}: refused to load: a pickle that torch's restricted unpickler does not "
                               f"accept ({detail}); write checkpoints with {TRAIN_COMMAND}")
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{type(err).__name__}{': ' + detail if detail else ''}")


def check_checkpoint_names(checkpoints: Iterable[str] | Mapping[str, object], names: Sequence[str],
                           command: str) -> None:
    """ValueError naming ``command`` unless ``checkpoints`` (their methods; a mapping of them
    to paths, whose unexpected ones the message names) are exactly ``names``. Called before
    any work: an extra name would otherwise be ignored, or fail after the predictions."""
    given = list(checkpoints)
    missing = [n for n in names if n not in given]
    extra = sorted(set(given) - set(names))
    if missing or extra:
        paths = ""
        if extra and isinstance(checkpoints, Mapping):
            paths = " (" + ", ".join(f"{n}={checkpoints[n]}" for n in extra) + ")"
        raise ValueError(f"{command}: needs a checkpoint for exactly {list(names)}; missing {missing}, "
                         f"unexpected {extra}{paths}")


def _plain(value):
    """Tuples as lists, mappings as dicts with string keys, recursively: what a weights-only
    load reads back, so that a record and an expectation compare equal when their settings are."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def checkpoint_identity(study: str, method: str, network: Mapping, **inputs) -> dict:
    """What a checkpoint records of itself under IDENTITY_KEY, and what a step that reads
    one expects: the study, the method (the name on the command line), the settings its
    network is built with (as in the config) and ``inputs``, other things the model is
    specific to (a flavour tagger's ``vertex_finder``), all plain data."""
    return {"study": study, "method": method, "network": _plain(network), **_plain(inputs)}


def _describe(identity: Mapping, inputs: Sequence[str] = ()) -> str:
    """"the <study> study's '<method>' model", with the entries ``inputs`` of ``identity``."""
    extra = ", ".join(f"{key} {identity.get(key)!r}" for key in inputs)
    return f"the {identity.get('study')} study's {identity.get('method')!r} model" + (f" ({extra})" if extra else "")


def check_identity(path: str | Path, state: Mapping, expected: Mapping) -> None:
    """CheckpointError naming the file unless the identity ``state`` records (a checkpoint's
    contents) is ``expected`` (``checkpoint_identity``): its study, method, every other
    entry of ``expected``, and every network setting (each mismatch named with both values)."""
    retrain = f"`pipeline {expected['study']} train --method {expected['method']}`"
    found = state.get(IDENTITY_KEY)
    if not isinstance(found, Mapping):
        raise CheckpointError(f"{path}: records no identity (study, method, network settings): it was written "
                              f"before checkpoints recorded theirs, or not by a training of this pipeline; given as "
                              f"{_describe(expected)}, so retrain it with {retrain}")
    inputs = sorted(set(expected) - {"study", "method", "network"})
    if any(found.get(key) != expected[key] for key in ("study", "method", *inputs)):
        raise CheckpointError(f"{path}: holds {_describe(found, inputs)}, but was given as "
                              f"{_describe(expected, inputs)}")
    built, config = found.get("network") or {}, expected["network"]
    wrong = [f"{key} = {built.get(key, '(not set)')!r} in the checkpoint, {config.get(key, '(not set)')!r} in the "
             f"config" for key in sorted(set(built) | set(config)) if built.get(key) != config.get(key)]
    if wrong:
        raise CheckpointError(f"{path}: {_describe(found)} was built with other network settings than the config's: "
                              f"{'; '.join(wrong)}; evaluate it with the config it was trained with, or retrain it "
                              f"with {retrain}")


def check_checkpoint(path: str | Path, expected: Mapping) -> None:
    """Read a checkpoint (``load_checkpoint``) and ``check_identity`` it: the check a step
    runs on all its checkpoints before any work, when it loads them one by one later."""
    check_identity(path, load_checkpoint(path), expected)


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


def load_module(module_class, path: str | Path, expected: Mapping | None = None):
    """A LightningModule of ``module_class`` restored from a checkpoint on the CPU;
    CheckpointError naming the file if it is unsafe or unreadable (``load_checkpoint``
    reads it first: a few MB, read twice), of another model, or, given ``expected``
    (``checkpoint_identity``; every step of the studies gives it), not what that says."""
    state = load_checkpoint(path)
    if "state_dict" not in state or "hyper_parameters" not in state:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict or hyper_parameters)")
    if expected is not None:
        check_identity(path, state, expected)
    try:
        module = module_class.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    except (TypeError, KeyError, RuntimeError, ValueError) as err:
        # Another model's hyperparameters (TypeError; ValueError from a module's own checks of
        # its settings) or weights (RuntimeError: missing keys).
        raise CheckpointError(f"{path}: not a {module_class.__name__} checkpoint: {str(err).splitlines()[0]}") from None
    return channels_last(module)


def checkpoint_run_id(path: str | Path) -> str:
    """The MLflow run id stored in a checkpoint written by ``fit_and_export``."""
    state = load_checkpoint(path)
    if RUN_ID_KEY not in state:
        raise CheckpointError(f"{path}: no {RUN_ID_KEY!r} in the checkpoint; was it written by {TRAIN_COMMAND}?")
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
