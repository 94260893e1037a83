"""Writing outputs safely: to a temporary file beside the target, renamed when complete.

A job that fails half-way never leaves a truncated file where Snakemake (or a person)
would take it for a result, and the temporary files of killed jobs are removed when the
output is made again.
"""

from __future__ import annotations

import csv
import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files of ``target`` whose writing process no longer exists
    (a killed job's); a live writer's file (the same output being made now) is left alone."""
    pattern = re.compile(re.escape(f".{target.stem}.tmp") + r"(\d+)" + re.escape(target.suffix), re.ASCII)
    for entry in os.scandir(target.parent):
        match = pattern.fullmatch(entry.name)
        pid = int(match.group(1)) if match else 0
        if pid in (0, os.getpid()):
            continue
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):
            Path(entry.path).unlink(missing_ok=True)
        except PermissionError:
            pass  # a live process of another user


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same directory and suffix as target); rename it to target
    when the block succeeds, delete it when the block or the rename raises."""
    target = Path(target)
    # Fail before the work, not at the rename after it.
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target.parent)) from None
    _remove_stale_temporaries(target)
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        # A failed write() names no file; the user asked for the target, not the temporary.
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, tmp, str(tmp)):
            err.filename, err.filename2 = str(target), None
        raise


def check_output_directory(path: str | Path) -> None:
    """Raise OSError, saying what to do, unless ``path`` is a directory this process may
    write in or may create: a run checks its results/ before the first job, not when the
    first output (a config snapshot at parse time) cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a directory: the workflow writes its outputs under "
                                 f"{path}/; move the file away")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{existing} is not writable by this user, and the workflow writes its outputs under "
                              f"{path}/; run in a directory you may write (snakemake --directory <dir>) or change "
                              "its permissions")


def write_text(target: str | Path, text: str) -> Path:
    with atomic_output(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on cluster nodes), in
    mplhep's ROOT style: every figure of the pipeline is drawn through it."""
    # imported on use: config and every file writer import this module; matplotlib and mplhep take ~1 s
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    mplhep.style.use("ROOT")
    return plt


def save_figure(fig, stem: str | Path, **savefig_options) -> list[Path]:
    """Save a matplotlib figure as stem.png (100 dpi) and stem.pdf; returns the paths."""
    written = []
    for suffix in ("png", "pdf"):
        target = Path(f"{stem}.{suffix}")
        with atomic_output(target) as tmp:
            fig.savefig(tmp, dpi=100 if suffix == "png" else None, **savefig_options)
        written.append(target)
    return written


def write_csv(target: str | Path, columns: Sequence[str], rows: Iterable[Mapping], floats: str = ".6g") -> Path:
    """A CSV table of ``rows`` (mappings; keys outside ``columns`` left out), floats in the
    format ``floats`` (default 6 significant digits; ".4f": 4 decimals)."""
    with atomic_output(target) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: (format(v, floats) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    return Path(target)
