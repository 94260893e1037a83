"""Writing outputs safely: to a temporary file beside the target, renamed when complete.

A job that fails half-way never leaves a truncated file where Snakemake (or a person)
would take it for a result.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same directory and suffix as target); rename it to target
    when the block succeeds, delete it when the block raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> Path:
    with atomic_output(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def save_figure(fig, stem: str | Path, **savefig_options) -> list[Path]:
    """Save a matplotlib figure as stem.png (100 dpi) and stem.pdf; returns the paths."""
    written = []
    for suffix in ("png", "pdf"):
        target = Path(f"{stem}.{suffix}")
        with atomic_output(target) as tmp:
            fig.savefig(tmp, dpi=100 if suffix == "png" else None, **savefig_options)
        written.append(target)
    return written
