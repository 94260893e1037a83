"""Opening a pipeline HDF5 file and checking, before anything is read, what the readers rely
on: the schema name and version, completeness, every field of every collection present,
of the declared dimensions and of one length, and offsets that index the rows (from 0,
never decreasing, ending at the data). Every error names the file."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np

from pipeline.io.schema import Collection, DataFileError, FileSchema

#: Offsets read per step of the open-time check that they do not decrease (8 MB).
CHECK_ROWS = 1 << 20


def _reason(err: BaseException) -> str:
    """h5py's message (a KeyError's without the quotes repr adds)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


@contextmanager
def naming_file(path: Path, action: str, hint: str = "; the file may be damaged") -> Iterator[None]:
    """Name the file in h5py's errors, which name none."""
    try:
        yield
    except OSError as err:
        if isinstance(err, DataFileError) or err.filename is not None:
            raise
        raise DataFileError(f"{path}: {action} failed ({_reason(err)}){hint}") from err
    except RuntimeError as err:
        raise DataFileError(f"{path}: {action} failed ({_reason(err)}){hint}") from err


def open_file(path: Path) -> h5py.File:
    """``path`` opened read-only with h5py; what keeps it from opening is a DataFileError."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataFileError(f"{path}: is a directory, expected an HDF5 file") from None
    except OSError as err:
        raise DataFileError(f"{path}: cannot open ({err.strerror})") from None
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from None


def file_schema(path: Path) -> str:
    """The schema a file says it holds, to choose the schema to read it with."""
    with open_file(path) as f, naming_file(path, "reading the attributes"):
        return _schema_name(f, path)


def _schema_name(f: h5py.File, path: Path) -> str:
    """The file's ``schema`` attribute; a file without one is not a pipeline file."""
    name = f.attrs.get("schema")
    if name is None:
        raise DataFileError(f"{path}: not a pipeline file (no 'schema' attribute)")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if not isinstance(name, str):
        raise DataFileError(f"{path}: not a pipeline file (its 'schema' attribute is {name!r}, expected a name)")
    return name


def check_schema(f: h5py.File, path: Path, schema: FileSchema) -> None:
    """Raise DataFileError unless ``f`` is a complete file of ``schema`` we can read."""
    try:
        _check_version(f, path, schema)
        rows: dict[str, int] = {}
        for collection in schema.collections:
            rows[collection.name] = _check_collection(f, path, collection, rows)
    except (KeyError, OSError, RuntimeError) as err:
        if isinstance(err, DataFileError):
            raise
        # h5py cannot parse an object header or attribute: the bytes are damaged.
        raise DataFileError(f"{path}: damaged file ({_reason(err)}); regenerate it") from err


def _check_version(f: h5py.File, path: Path, schema: FileSchema) -> None:
    name = _schema_name(f, path)
    version = f.attrs.get("schema_version")
    if version is None:
        raise DataFileError(f"{path}: not a pipeline file (schema attribute {name!r} but no 'schema_version')")
    if not isinstance(version, np.integer):
        raise DataFileError(
            f"{path}: not a pipeline file (schema_version {version!r} of schema {name!r} is not an integer)"
        )
    version = int(version)
    if name != schema.name:
        raise DataFileError(f"{path}: holds schema {name!r}, expected {schema.name!r}")
    if version > schema.version:
        raise DataFileError(
            f"{path}: schema {name!r} version {version} is newer than this package reads "
            f"(version {schema.version}); upgrade the pipeline package"
        )
    if version < schema.version:
        raise DataFileError(
            f"{path}: schema {name!r} version {version} is older than this package reads "
            f"(version {schema.version}); regenerate the file"
        )
    if not f.attrs.get("complete", False):
        raise DataFileError(f"{path}: incomplete file (the job that wrote it did not finish)")


def _member(group: h5py.Group, name: str, kind: type, path: Path):
    """group[name] if it is a ``kind`` (h5py.Group or h5py.Dataset), else None."""
    if name not in group:
        return None
    try:
        member = group[name]
    except (KeyError, OSError, RuntimeError) as err:
        raise DataFileError(
            f"{path}: damaged file: cannot open {group.name.rstrip('/')}/{name} ({_reason(err)}); regenerate it"
        ) from err
    return member if isinstance(member, kind) else None


def _check_collection(f: h5py.File, path: Path, collection: Collection, rows: Mapping[str, int]) -> int:
    """Check a collection's fields and offsets against the schema; returns its row count."""
    group = _member(f, collection.name, h5py.Group, path)
    if group is None:
        raise DataFileError(f"{path}: lacks collection {collection.name!r} (expected a group of that name)")
    datasets = {fld.name: _member(group, fld.name, h5py.Dataset, path) for fld in collection.fields}
    missing = [name for name, ds in datasets.items() if ds is None]
    if missing:
        raise DataFileError(f"{path}: collection {collection.name!r} lacks fields {missing}")
    for fld in collection.fields:
        # Per-row sizes may vary (a jet_images file states its pixels), their number not.
        if datasets[fld.name].ndim != 1 + len(fld.shape):
            expected = ", ".join(["rows", *map(str, fld.shape)])
            raise DataFileError(f"{path}: {collection.name}/{fld.name} has shape {datasets[fld.name].shape}, "
                                f"expected ({expected})")
    lengths = {name: ds.shape[0] for name, ds in datasets.items()}
    n_rows = next(iter(lengths.values()))
    if len(set(lengths.values())) > 1:
        raise DataFileError(f"{path}: the fields of {collection.name!r} differ in length ({lengths}); "
                            f"expected one row per entry in each")
    if collection.parent is not None:
        _check_offsets(group, path, collection, rows[collection.parent], n_rows)
    return n_rows


def _check_offsets(group: h5py.Group, path: Path, collection: Collection, n_parent: int, n_rows: int) -> None:
    """Offsets index the rows: n_parent + 1 integers from 0 up to n_rows, never decreasing."""
    where = f"{collection.name}/offsets"
    offsets = _member(group, "offsets", h5py.Dataset, path)
    if offsets is None:
        raise DataFileError(f"{path}: lacks {where} (expected the {n_parent + 1} offsets of the "
                            f"{collection.name} of each {collection.parent} row)")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise DataFileError(f"{path}: {where} is {offsets.dtype} of shape {offsets.shape}, expected 1-d integers")
    if len(offsets) != n_parent + 1:
        raise DataFileError(f"{path}: {where} has {len(offsets)} entries, expected {n_parent + 1} "
                            f"(one per {collection.parent} row, plus one)")
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0:
        raise DataFileError(f"{path}: {where} starts at {first}, expected 0")
    if last != n_rows:
        raise DataFileError(f"{path}: {where} ends at {last}, but {collection.name} has {n_rows} rows; "
                            f"expected them to end together")
    # In steps, so memory stays bounded; offsets are small next to the data they index.
    previous = 0
    for start in range(0, len(offsets), CHECK_ROWS):
        step = offsets[start : start + CHECK_ROWS].astype(np.int64, copy=False)  # unsigned would wrap
        down = np.flatnonzero(np.diff(step, prepend=previous) < 0)
        if len(down):
            row = start + int(down[0])
            raise DataFileError(f"{path}: {where} decreases at entry {row} ({int(offsets[row - 1])} to "
                                f"{int(offsets[row])}); expected non-decreasing offsets")
        previous = step[-1]
