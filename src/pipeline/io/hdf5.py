"""Versioned, ragged HDF5 files: one writer and one reader for every stage.

Layout of a file (the concrete schemas: ``pipeline.simulation.formats`` and each study's ``formats``):

* one group per *collection* (``events``, ``jets``, ``tracks``, ...), holding one
  1-d dataset per field, chunked and gzip-compressed, with ``unit`` and
  ``description`` attributes;
* a collection with a parent (``tracks`` belongs to ``jets``) also holds
  ``offsets`` (int64, length n_parent + 1): the children of parent row i are rows
  ``offsets[i]:offsets[i+1]``;
* file attributes: ``schema``, ``schema_version``, ``package_version``, ``git_sha``,
  ``config`` (JSON), ``config_hash``, ``seed``, and what the stage adds.

Files are written to a temporary name in the target directory and renamed into place
only when complete, so a crashed job never leaves a half-written file behind. Readers
check a file's structure on open (cheaply: shapes, attributes and one pass over each
offsets dataset), so a damaged or foreign file is refused with an error naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import h5py
import numpy as np

from pipeline import __version__
from pipeline.io.outputs import atomic_output

#: Rows per HDF5 chunk; large enough for fast streaming, small enough for slicing.
CHUNK_ROWS = 32768
#: Rows buffered in memory per collection before they are written.
FLUSH_ROWS = 4 * CHUNK_ROWS
COMPRESSION = dict(compression="gzip", compression_opts=1, shuffle=True)
#: Offsets read per step of the open-time check that they do not decrease (8 MB).
CHECK_ROWS = 32 * CHUNK_ROWS


class DataFileError(OSError):
    """A file that cannot be read as the expected pipeline format; the message names it."""


@dataclass(frozen=True)
class Field:
    """One dataset of a collection: one row per collection entry, ``shape`` per row."""

    name: str
    dtype: str
    unit: str
    description: str
    shape: tuple[int, ...] = ()
    #: Whether the dataset is gzip-compressed; fields read at training speed may opt out.
    compressed: bool = True


def fields(*rows: tuple[str, str, str, str]) -> tuple[Field, ...]:
    """Fields from (name, dtype, unit, description) rows: the compact way schemas list them."""
    return tuple(Field(*row) for row in rows)


@dataclass(frozen=True)
class Collection:
    name: str
    parent: str | None
    fields: tuple[Field, ...]
    description: str = ""

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


@dataclass(frozen=True)
class FileSchema:
    name: str
    version: int
    collections: tuple[Collection, ...]
    description: str = ""

    def collection(self, name: str) -> Collection:
        for collection in self.collections:
            if collection.name == name:
                return collection
        raise KeyError(f"schema {self.name!r} has no collection {name!r}")


def git_sha() -> str:
    """The git commit of the source tree this package runs from ("-dirty" if modified), or "" if unknown."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance_attrs(config: Mapping, config_hash: str, seed: int) -> dict:
    """The attributes every stage writes: versions, the resolved config, its hash, the seed."""
    return {
        "package_version": __version__,
        "git_sha": git_sha(),
        "config": json.dumps(config, sort_keys=True),
        "config_hash": config_hash,
        "seed": int(seed),
    }


class RaggedWriter:
    """Append-only writer of one schema's collections; use as a context manager.

    ``append`` takes, per collection, a dict of field arrays, and for each child
    collection the number of children of each new parent row. On a clean exit the
    temporary file is renamed to ``path``; on an exception it is deleted.
    """

    def __init__(self, path: str | Path, schema: FileSchema, attrs: Mapping[str, object]):
        self.path = Path(path)
        self.schema = schema
        self.attrs = dict(attrs)
        self._output = atomic_output(self.path)
        self._sink: _GuardedFile | None = None
        self._file: h5py.File | None = None
        self._rows = {c.name: 0 for c in schema.collections}
        self._flushed = dict(self._rows)
        self._pending: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        self._pending_rows = 0

    def __enter__(self) -> "RaggedWriter":
        tmp = self._output.__enter__()
        try:
            self._sink = _GuardedFile(tmp, self.path)
            with _naming_file(self.path, "writing", hint=""):
                self._file = h5py.File(tmp, "w", driver="fileobj", fileobj=self._sink, track_order=True)
                self._create()
            self._sink.raise_error()
        except BaseException as err:
            self._close_and_finish(type(err), err, err.__traceback__)
            raise
        return self

    def _create(self) -> None:
        f = self._file
        f.attrs["schema"] = self.schema.name
        f.attrs["schema_version"] = self.schema.version
        for key, value in self.attrs.items():
            f.attrs[key] = value
        for collection in self.schema.collections:
            group = f.create_group(collection.name)
            group.attrs["description"] = collection.description
            if collection.parent is not None:
                group.attrs["parent"] = collection.parent
                offsets = group.create_dataset(
                    "offsets", data=np.zeros(1, np.int64), maxshape=(None,),
                    chunks=(CHUNK_ROWS,), track_times=False, **COMPRESSION,
                )
                offsets.attrs["description"] = (
                    f"rows offsets[i]:offsets[i+1] of {collection.name} belong to {collection.parent} row i"
                )
            for fld in collection.fields:
                rows = max(1, CHUNK_ROWS // max(1, int(np.prod(fld.shape))))
                ds = group.create_dataset(
                    fld.name, shape=(0, *fld.shape), dtype=fld.dtype, maxshape=(None, *fld.shape),
                    chunks=(rows, *fld.shape), track_times=False, **(COMPRESSION if fld.compressed else {}),
                )
                ds.attrs["unit"] = fld.unit
                ds.attrs["description"] = fld.description

    def append(
        self,
        arrays: Mapping[str, Mapping[str, np.ndarray]],
        counts: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append rows to every collection of the schema at once.

        arrays: {collection: {field: 1-d array}}; every field of every collection.
        counts: {child collection: number of children per new parent row}.
        """
        counts = counts or {}
        new_rows = {}
        for collection in self.schema.collections:
            columns = arrays.get(collection.name)
            if columns is None:
                raise ValueError(f"{self.path}: append() is missing collection {collection.name!r}")
            missing = set(collection.field_names()) - set(columns)
            extra = set(columns) - set(collection.field_names())
            if missing or extra:
                raise ValueError(
                    f"{self.path}: collection {collection.name!r} fields mismatch: "
                    f"missing {sorted(missing)}, unexpected {sorted(extra)}"
                )
            lengths = {len(columns[name]) for name in collection.field_names()}
            if len(lengths) != 1:
                raise ValueError(f"{self.path}: fields of {collection.name!r} differ in length")
            new_rows[collection.name] = lengths.pop()
        for collection in self.schema.collections:
            if collection.parent is None:
                continue
            n_children = np.asarray(counts.get(collection.name), dtype=np.int64)
            if n_children.ndim != 1 or len(n_children) != new_rows[collection.parent]:
                raise ValueError(
                    f"{self.path}: counts for {collection.name!r} must have one entry per new "
                    f"{collection.parent!r} row ({new_rows[collection.parent]})"
                )
            if n_children.sum() != new_rows[collection.name]:
                raise ValueError(
                    f"{self.path}: counts for {collection.name!r} add up to {n_children.sum()}, "
                    f"but {new_rows[collection.name]} rows were given"
                )
            self._pending[(collection.name, "offsets")].append(
                self._rows[collection.name] + np.cumsum(n_children)
            )
        for collection in self.schema.collections:
            for fld in collection.fields:
                self._pending[(collection.name, fld.name)].append(
                    np.asarray(arrays[collection.name][fld.name], dtype=fld.dtype)
                )
            self._rows[collection.name] += new_rows[collection.name]
            self._pending_rows = max(self._pending_rows, self._rows[collection.name] - self._flushed[collection.name])
        if self._pending_rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Write the buffered rows: few large writes instead of many partial chunks."""
        for (group, name), parts in self._pending.items():
            if not parts:
                continue
            data = np.concatenate(parts)
            with _naming_file(self.path, "writing", hint=""):
                ds = self._file[group][name]
                start = ds.shape[0]
                ds.resize((start + len(data), *ds.shape[1:]))
                ds[start:] = data
            parts.clear()
            # Stop at the first failed write (a full disk) instead of computing on.
            self._sink.raise_error()
        self._flushed = dict(self._rows)
        self._pending_rows = 0

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                self._flush()
                with _naming_file(self.path, "writing", hint=""):
                    self._file.attrs["complete"] = True
        except BaseException as err:
            self._close_and_finish(type(err), err, err.__traceback__)
            raise
        self._close_and_finish(exc_type, exc, tb)

    def _close_and_finish(self, exc_type, exc, tb) -> None:
        """Close the file, then rename it into place, or delete it if anything failed:
        the block, or closing (HDF5 writes its metadata then) or the rename itself."""
        try:
            try:
                if self._file is not None:
                    with _naming_file(self.path, "writing", hint=""):
                        self._file.close()
            finally:
                if self._sink is not None:
                    self._sink.close()
            if exc_type is None:
                self._sink.raise_error()
        except BaseException as err:
            if exc_type is None:
                exc_type, exc, tb = type(err), err, err.__traceback__
            self._output.__exit__(exc_type, exc, tb)
            raise
        self._output.__exit__(exc_type, exc, tb)


class _GuardedFile:
    """The writer's temporary file as HDF5 sees it, through h5py's file-object driver.

    A failed write (full disk, file-size limit) is recorded instead of raised into HDF5:
    after failed writes HDF5 cannot close its objects, h5py prints an error for each
    one, and HDF5 crashes at exit. Writes from the failure on are kept in memory so that
    HDF5 reads back what it wrote and closes cleanly; the writer then raises the error.
    """

    def __init__(self, path: Path, target: Path):
        self.target = target
        self.error: OSError | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as err:
            # The temporary name means nothing to the user; the output does.
            raise OSError(err.errno, err.strerror, str(target)) from err
        self._pos = 0
        self._size = 0
        self._unwritten: list[tuple[int, bytes]] = []

    def raise_error(self) -> None:
        if self.error is not None:
            raise OSError(self.error.errno, self.error.strerror, str(self.target)) from self.error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self._size
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        if self.error is None:
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                self.error = err
        if done < len(view):
            self._unwritten.append((self._pos + done, bytes(view[done:])))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[: len(data)] = data
        view[len(data):] = bytes(len(view) - len(data))
        for start, chunk in self._unwritten:
            lo, hi = max(start, self._pos), min(start + len(chunk), self._pos + len(view))
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = chunk[lo - start : hi - start]
        self._pos += len(view)
        return len(view)

    def truncate(self, size: int) -> int:
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.error = err
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes go straight to the file descriptor."""

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.close(self._fd)
        except OSError as err:
            # Network file systems may report a failed write only now.
            self.error = self.error or err
        self._fd = -1


class RaggedReader:
    """Reader of one pipeline file that checks its schema, version and structure on open."""

    def __init__(self, path: str | Path, schema: FileSchema):
        self.path = Path(path)
        self.schema = schema
        self._file = open_file(self.path)
        try:
            check_schema(self._file, self.path, schema)
        except BaseException:
            self._file.close()
            raise

    @property
    def attrs(self) -> dict:
        with _naming_file(self.path, "reading the attributes"):
            return dict(self._file.attrs)

    @property
    def config(self) -> dict:
        """The config of the job that wrote the file (its ``config`` attribute, JSON)."""
        expected = "expected the JSON object of the config of the job that wrote the file"
        with _naming_file(self.path, "reading the attributes"):
            text = self._file.attrs.get("config")
        if text is None:
            raise DataFileError(f"{self.path}: no 'config' attribute; {expected}")
        try:
            config = json.loads(text)
        except (TypeError, ValueError) as err:
            raise DataFileError(f"{self.path}: 'config' attribute is not JSON ({err}); {expected}") from None
        if not isinstance(config, dict):
            raise DataFileError(f"{self.path}: 'config' attribute is a JSON {type(config).__name__}; {expected}")
        return config

    def n_rows(self, collection: str) -> int:
        fields = self.schema.collection(collection).field_names()
        with _naming_file(self.path, f"reading {collection}"):
            return int(self._file[collection][fields[0]].shape[0])

    def offsets(self, collection: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Offsets of a child collection for parent rows [start, stop) (length n + 1)."""
        stop = self.n_rows(self.schema.collection(collection).parent) if stop is None else stop
        with _naming_file(self.path, f"reading {collection}/offsets"):
            return self._file[collection]["offsets"][start : stop + 1]

    def read(
        self,
        collection: str,
        fields: Iterable[str] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows [start, stop) of the given fields (default: all) of a collection."""
        names = list(fields) if fields is not None else self.schema.collection(collection).field_names()
        with _naming_file(self.path, f"reading {collection} rows {start}:{'' if stop is None else stop}"):
            group = self._file[collection]
            return {name: group[name][start:stop] for name in names}

    def read_children(
        self,
        collection: str,
        parent_start: int,
        parent_stop: int,
        fields: Iterable[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The children of parent rows [parent_start, parent_stop) as one contiguous slice.

        Returns (arrays, offsets) with offsets rebased to start at 0.
        """
        offsets = self.offsets(collection, parent_start, parent_stop)
        arrays = self.read(collection, fields, int(offsets[0]), int(offsets[-1]))
        return arrays, offsets - offsets[0]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RaggedReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(err: BaseException) -> str:
    """h5py's message (a KeyError's without the quotes repr adds)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


@contextmanager
def _naming_file(path: Path, action: str, hint: str = "; the file may be damaged") -> Iterator[None]:
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
    with open_file(path) as f, _naming_file(path, "reading the attributes"):
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


def ragged_rows(offsets: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Child row indices of the selected parent rows, in order (vectorised).

    offsets: (n_parent + 1,) int; parents: (k,) int indices of parent rows.
    """
    starts = offsets[parents]
    lengths = offsets[parents + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    # Position within each selected parent, plus that parent's start.
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - first)


def parent_index(offsets: np.ndarray) -> np.ndarray:
    """For each child row, the (local) index of its parent row."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def read_tree(reader: RaggedReader, start: int, stop: int,
              collections: Iterable[str] | None = None) -> tuple[dict, dict]:
    """Rows [start, stop) of the top-level collection and all their descendants.

    ``collections``: read only these (default: all; their ancestors' offsets are read
    anyway). Returns (arrays {collection: {field: array}}, offsets {child: rebased
    offsets, one per parent row read}).
    """
    wanted = None if collections is None else set(collections)
    ranges = {}
    arrays, offsets = {}, {}
    for collection in reader.schema.collections:
        if collection.parent is None:
            ranges[collection.name] = (start, stop)
        else:
            p0, p1 = ranges[collection.parent]
            rows = reader.offsets(collection.name, p0, p1)
            ranges[collection.name] = (int(rows[0]), int(rows[-1]))
            offsets[collection.name] = rows - rows[0]
        if wanted is None or collection.name in wanted:
            arrays[collection.name] = reader.read(collection.name, None, *ranges[collection.name])
    return arrays, offsets


def select_tree(schema: FileSchema, arrays: dict, offsets: dict, rows: np.ndarray) -> tuple[dict, dict]:
    """The selected top-level rows of a read_tree() result and all their descendants.

    Returns (arrays, counts) ready for RaggedWriter.append.
    """
    selected = {}
    out, counts = {}, {}
    for collection in schema.collections:
        if collection.parent is None:
            take = np.asarray(rows, np.int64)
        else:
            parents = selected[collection.parent]
            off = offsets[collection.name]
            take = ragged_rows(off, parents)
            counts[collection.name] = off[parents + 1] - off[parents]
        selected[collection.name] = take
        out[collection.name] = {k: v[take] for k, v in arrays[collection.name].items()}
    return out, counts
