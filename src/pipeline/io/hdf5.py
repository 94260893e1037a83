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
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from pipeline import __version__
from pipeline.io.guarded_file import GuardedFile
from pipeline.io.integrity import check_schema, file_schema, naming_file, open_file
from pipeline.io.outputs import atomic_output

# The schema vocabulary, importable from here as from its own module.
from pipeline.io.schema import Collection, DataFileError, Field, FileSchema, fields

__all__ = ["Collection", "DataFileError", "Field", "FileSchema", "fields", "check_schema", "file_schema", "open_file",
           "RaggedReader", "RaggedWriter", "data_set_of", "git_sha", "provenance_attrs", "ragged_rows", "parent_index",
           "read_tree", "select_tree"]

#: Rows per HDF5 chunk; large enough for fast streaming, small enough for slicing.
CHUNK_ROWS = 32768
#: Rows buffered in memory per collection before they are written.
FLUSH_ROWS = 4 * CHUNK_ROWS
#: ... or bytes buffered in all, whichever comes first: 131k rows of 40 x 40 jet images
#: would hold 840 MB (twice that while they are joined for the write).
FLUSH_BYTES = 64 * 2**20
COMPRESSION = dict(compression="gzip", compression_opts=1, shuffle=True)


class LazyFile:
    """A mixin for readers of one HDF5 file ``self.path`` that outlive a fork (DataLoader
    workers): ``_open`` opens it read-only on first use in each process, ``_dataset`` one of
    its datasets, and pickling leaves the handles out (an h5py handle must not cross a fork)."""

    _file: h5py.File | None = None
    _datasets: dict[str, h5py.Dataset] | None = None

    def _open(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def _dataset(self, name: str) -> h5py.Dataset:
        """The dataset ``name`` ("collection/field"), opened once per process. HDF5 keeps a
        dataset's chunk cache only while the dataset stays open: a reader that looks it up
        again for every batch decompresses a whole chunk (128-256 kB) at every read of a
        slice smaller than that (the flavour tagger's loader reads sixteen slices a batch;
        docs/benchmarks.md)."""
        if self._datasets is None:
            self._datasets = {}
        if name not in self._datasets:
            self._datasets[name] = self._open()[name]
        return self._datasets[name]

    def _reading(self, what: str):
        """A context in which a failed read names this file and ``what`` was read: HDF5
        reports a damaged chunk of a file that opens as "Can't synchronously read data
        (filter returned failure during read)", with no file named."""
        return naming_file(self.path, f"reading {what}")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        state["_datasets"] = None
        return state


def data_set_of(path: str | Path) -> str | None:
    """What a study's data file was made from, its ``dataset`` attribute ("simulation, sample
    ttbar" or a public data set's name and directory), for the tables and the MLflow runs;
    None for a file without one (edge scores, predictions)."""
    with h5py.File(path, "r") as f:
        value = f.attrs.get("dataset")
    return value.decode() if isinstance(value, bytes) else value


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
        "config": json.dumps(config, sort_keys=True, allow_nan=False),  # validated configs hold finite numbers
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
        self._sink: GuardedFile | None = None
        self._file: h5py.File | None = None
        self._rows = {c.name: 0 for c in schema.collections}
        self._flushed = dict(self._rows)
        self._pending: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        self._pending_rows = 0
        self._pending_bytes = 0

    def __enter__(self) -> "RaggedWriter":
        tmp = self._output.__enter__()
        try:
            self._sink = GuardedFile(tmp, self.path)
            with naming_file(self.path, "writing", hint=""):
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
                column = np.asarray(arrays[collection.name][fld.name], dtype=fld.dtype)
                self._pending[(collection.name, fld.name)].append(column)
                self._pending_bytes += column.nbytes
            self._rows[collection.name] += new_rows[collection.name]
            self._pending_rows = max(self._pending_rows, self._rows[collection.name] - self._flushed[collection.name])
        if self._pending_rows >= FLUSH_ROWS or self._pending_bytes >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Write the buffered rows: few large writes instead of many partial chunks."""
        for (group, name), parts in self._pending.items():
            if not parts:
                continue
            data = np.concatenate(parts)
            with naming_file(self.path, "writing", hint=""):
                ds = self._file[group][name]
                start = ds.shape[0]
                ds.resize((start + len(data), *ds.shape[1:]))
                ds[start:] = data
            parts.clear()
            # Stop at the first failed write (a full disk) instead of computing on.
            self._sink.raise_error()
        self._flushed = dict(self._rows)
        self._pending_rows = 0
        self._pending_bytes = 0

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                self._flush()
                with naming_file(self.path, "writing", hint=""):
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
                    with naming_file(self.path, "writing", hint=""):
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
        with naming_file(self.path, "reading the attributes"):
            return dict(self._file.attrs)

    @property
    def config(self) -> dict:
        """The config of the job that wrote the file (its ``config`` attribute, JSON)."""
        expected = "expected the JSON object of the config of the job that wrote the file"
        with naming_file(self.path, "reading the attributes"):
            text = self._file.attrs.get("config")
        if text is None:
            raise DataFileError(f"{self.path}: no 'config' attribute; {expected}")
        def non_finite(name: str):
            raise ValueError(f"it holds {name}, and a config holds finite numbers only")

        try:
            config = json.loads(text, parse_constant=non_finite)
        except (TypeError, ValueError) as err:
            raise DataFileError(f"{self.path}: 'config' attribute is not JSON ({err}); {expected}") from None
        if not isinstance(config, dict):
            raise DataFileError(f"{self.path}: 'config' attribute is a JSON {type(config).__name__}; {expected}")
        return config

    def n_rows(self, collection: str) -> int:
        fields = self.schema.collection(collection).field_names()
        with naming_file(self.path, f"reading {collection}"):
            return int(self._file[collection][fields[0]].shape[0])

    def offsets(self, collection: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Offsets of a child collection for parent rows [start, stop) (length n + 1)."""
        stop = self.n_rows(self.schema.collection(collection).parent) if stop is None else stop
        with naming_file(self.path, f"reading {collection}/offsets"):
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
        with naming_file(self.path, f"reading {collection} rows {start}:{'' if stop is None else stop}"):
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
