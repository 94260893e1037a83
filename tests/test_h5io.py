"""Versioned ragged HDF5 I/O: round trips, atomic writes, readable errors, ragged indexing."""

from __future__ import annotations

import errno
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.io import hdf5 as h5io
from pipeline.io import outputs
from pipeline.io.hdf5 import (
    Collection,
    DataFileError,
    Field,
    FileSchema,
    RaggedReader,
    RaggedWriter,
    parent_index,
    ragged_rows,
    read_tree,
    select_tree,
)

EVENTS = Collection(
    "events", None,
    (Field("number", "i8", "", "event number"), Field("energy", "f8", "GeV", "total energy")),
)
HITS = Collection(
    "hits", "events",
    (Field("x", "f4", "mm", "hit x"), Field("layer", "i1", "", "layer"), Field("t", "f8", "ns", "time")),
)
SCHEMA = FileSchema("test_hits", 3, (EVENTS, HITS), "a test schema")
ATTRS = {"config": "{}", "seed": 42, "note": "hello"}


def batch(numbers, hits_per_event, x0=0.0):
    """Arrays and counts for RaggedWriter.append: hit values encode their event."""
    numbers = np.asarray(numbers, dtype=np.int64)
    counts = np.asarray(hits_per_event, dtype=np.int64)
    event_of_hit = np.repeat(numbers, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    arrays = {
        "events": {"number": numbers, "energy": numbers * 1.5},
        "hits": {"x": x0 + event_of_hit + 0.25 * within, "layer": within, "t": event_of_hit * 10.0 + within},
    }
    return arrays, {"hits": counts}


def write_file(path, batches, schema=SCHEMA, attrs=ATTRS):
    with RaggedWriter(path, schema, attrs) as writer:
        for arrays, counts in batches:
            writer.append(arrays, counts)
    return path


@pytest.fixture
def good_file(tmp_path):
    return write_file(tmp_path / "good.h5", [batch([0, 1, 2], [2, 0, 3]), batch([3, 4], [1, 4])])


# --- round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("flush_rows, flush_bytes", [(h5io.FLUSH_ROWS, h5io.FLUSH_BYTES), (1, h5io.FLUSH_BYTES),
                                                     (3, h5io.FLUSH_BYTES), (h5io.FLUSH_ROWS, 40)])
def test_round_trip_of_appended_batches(tmp_path, monkeypatch, flush_rows, flush_bytes):
    # A small FLUSH_ROWS or FLUSH_BYTES makes the writer flush between (and within) appends.
    monkeypatch.setattr(h5io, "FLUSH_ROWS", flush_rows)
    monkeypatch.setattr(h5io, "FLUSH_BYTES", flush_bytes)
    flushes = []
    original = h5io.RaggedWriter._flush

    def counted(self):
        flushes.append(self._pending_rows)
        original(self)

    monkeypatch.setattr(h5io.RaggedWriter, "_flush", counted)
    path = write_file(tmp_path / "data.h5", [batch([0, 1, 2], [2, 0, 3]), batch([3, 4], [1, 4]),
                                             batch([5], [0])])
    with RaggedReader(path, SCHEMA) as reader:
        assert reader.n_rows("events") == 6
        assert reader.n_rows("hits") == 10
        np.testing.assert_array_equal(reader.offsets("hits"), [0, 2, 2, 5, 6, 10, 10])
        events = reader.read("events")
        hits = reader.read("hits")
        np.testing.assert_array_equal(events["number"], np.arange(6))
        np.testing.assert_array_equal(events["energy"], np.arange(6) * 1.5)
        expected_event = np.array([0, 0, 2, 2, 2, 3, 4, 4, 4, 4])
        expected_within = np.array([0, 1, 0, 1, 2, 0, 0, 1, 2, 3])
        np.testing.assert_array_equal(hits["x"], (expected_event + 0.25 * expected_within).astype("f4"))
        np.testing.assert_array_equal(hits["layer"], expected_within)
        np.testing.assert_array_equal(hits["t"], expected_event * 10.0 + expected_within)
        # Offsets of a parent range and children read by parent.
        np.testing.assert_array_equal(reader.offsets("hits", 2, 4), [2, 5, 6])
        children, offsets = reader.read_children("hits", 2, 4)
        np.testing.assert_array_equal(offsets, [0, 3, 4])
        np.testing.assert_array_equal(children["t"], [20.0, 21.0, 22.0, 30.0])
        attrs = reader.attrs
    assert attrs["schema"] == "test_hits"
    assert attrs["schema_version"] == 3
    assert attrs["seed"] == 42 and attrs["note"] == "hello"
    assert bool(attrs["complete"])
    if flush_rows > 10 and flush_bytes > 1000:
        assert flushes == [10]  # no bound reached: one write of everything (10 hits), at the end
    if flush_bytes == 40:  # a write after each of the first two batches (over 40 bytes), the third's 16 at the end
        assert flushes == [5, 5, 1]


def test_dtypes_and_units_as_declared(good_file):
    with h5py.File(good_file, "r") as f:
        for collection in SCHEMA.collections:
            for field in collection.fields:
                ds = f[collection.name][field.name]
                assert ds.dtype == np.dtype(field.dtype), (collection.name, field.name)
                assert ds.attrs["unit"] == field.unit
                assert ds.attrs["description"] == field.description
        assert f["hits"]["offsets"].dtype == np.int64
        assert "offsets" not in f["events"]
        assert f["hits"].attrs["parent"] == "events"
    with RaggedReader(good_file, SCHEMA) as reader:
        assert reader.read("hits")["x"].dtype == np.float32
        assert reader.read("hits")["layer"].dtype == np.int8


def test_read_tree_and_select_tree_keep_children_with_their_parents(good_file):
    with RaggedReader(good_file, SCHEMA) as reader:
        arrays, offsets = read_tree(reader, 1, 4)  # events 1, 2, 3
    np.testing.assert_array_equal(arrays["events"]["number"], [1, 2, 3])
    np.testing.assert_array_equal(offsets["hits"], [0, 0, 3, 4])
    np.testing.assert_array_equal(arrays["hits"]["t"], [20, 21, 22, 30])
    selected, counts = select_tree(SCHEMA, arrays, offsets, np.array([2, 0, 1]))
    np.testing.assert_array_equal(selected["events"]["number"], [3, 1, 2])
    np.testing.assert_array_equal(counts["hits"], [1, 0, 3])
    np.testing.assert_array_equal(selected["hits"]["t"], [30, 20, 21, 22])


def test_append_rejects_inconsistent_input(tmp_path):
    arrays, counts = batch([0, 1], [1, 2])
    with pytest.raises(ValueError, match="add up"):
        with RaggedWriter(tmp_path / "a.h5", SCHEMA, ATTRS) as writer:
            writer.append(arrays, {"hits": np.array([1, 1])})
    with pytest.raises(ValueError, match="missing"):
        with RaggedWriter(tmp_path / "b.h5", SCHEMA, ATTRS) as writer:
            writer.append({"events": arrays["events"], "hits": {"x": arrays["hits"]["x"]}}, counts)
    assert list(tmp_path.iterdir()) == []


# --- atomic writes -----------------------------------------------------------------------


def test_exception_inside_the_writer_leaves_no_file(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with RaggedWriter(target, SCHEMA, ATTRS) as writer:
            writer.append(*batch([0, 1], [2, 1]))
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file either


def test_exception_keeps_an_existing_file_intact(tmp_path, good_file):
    before = good_file.read_bytes()
    with pytest.raises(RuntimeError):
        with RaggedWriter(good_file, SCHEMA, ATTRS) as writer:
            writer.append(*batch([7], [9]))
            raise RuntimeError("crash")
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5"]


def test_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.h5"
    with RaggedWriter(target, SCHEMA, ATTRS) as writer:
        writer.append(*batch([0], [1]))
        assert not target.exists()
    assert target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


# --- reader errors name the file (the cases: tests/test_bad_inputs_files.py) ---------------


def test_reader_error_is_an_os_error():
    assert issubclass(DataFileError, OSError)


# --- ragged indexing ----------------------------------------------------------------------


def test_ragged_rows_hand_computed():
    offsets = np.array([0, 2, 2, 5, 6, 10])  # sizes 2, 0, 3, 1, 4
    np.testing.assert_array_equal(ragged_rows(offsets, np.array([0, 2])), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ragged_rows(offsets, np.array([4, 0])), [6, 7, 8, 9, 0, 1])
    np.testing.assert_array_equal(ragged_rows(offsets, np.array([1, 3, 1])), [5])
    np.testing.assert_array_equal(ragged_rows(offsets, np.array([2, 2])), [2, 3, 4, 2, 3, 4])
    np.testing.assert_array_equal(ragged_rows(offsets, np.array([0, 1, 2, 3, 4])), np.arange(10))
    assert len(ragged_rows(offsets, np.array([1]))) == 0
    assert len(ragged_rows(offsets, np.array([], np.int64))) == 0


def test_ragged_rows_random(rng):
    sizes = rng.integers(0, 6, 50)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parents = rng.integers(0, 50, 30)
    expected = [row for p in parents for row in range(offsets[p], offsets[p + 1])]
    np.testing.assert_array_equal(ragged_rows(offsets, parents), expected)


def test_parent_index_hand_computed():
    np.testing.assert_array_equal(parent_index(np.array([0, 2, 2, 5, 6, 6])), [0, 0, 2, 2, 2, 3])
    np.testing.assert_array_equal(parent_index(np.array([0, 0, 0, 1])), [2])
    assert len(parent_index(np.array([0, 0, 0]))) == 0
    assert len(parent_index(np.array([0]))) == 0


# --- three levels: events -> jets -> tracks ------------------------------------------------

NESTED = FileSchema("nested", 1, (
    Collection("events", None, (Field("number", "i8", "", ""),)),
    Collection("jets", "events", (Field("jet_id", "i8", "", ""),)),
    Collection("tracks", "jets", (Field("track_id", "i8", "", ""),)),
))


def test_nested_read_and_select(tmp_path):
    # events: 0 has jets [0, 1], 1 has none, 2 has jet [2]; jets have 2, 0, 3 tracks.
    arrays = {"events": {"number": np.array([10, 11, 12])},
              "jets": {"jet_id": np.array([100, 101, 102])},
              "tracks": {"track_id": np.array([1000, 1001, 1020, 1021, 1022])}}
    counts = {"jets": np.array([2, 0, 1]), "tracks": np.array([2, 0, 3])}
    path = tmp_path / "nested.h5"
    with RaggedWriter(path, NESTED, {}) as writer:
        writer.append(arrays, counts)
        writer.append({"events": {"number": np.array([13])}, "jets": {"jet_id": np.array([103])},
                       "tracks": {"track_id": np.array([1030])}},
                      {"jets": np.array([1]), "tracks": np.array([1])})
    with RaggedReader(path, NESTED) as reader:
        np.testing.assert_array_equal(reader.offsets("tracks"), [0, 2, 2, 5, 6])
        tree, offsets = read_tree(reader, 1, 4)  # events 11, 12, 13
    np.testing.assert_array_equal(tree["jets"]["jet_id"], [102, 103])
    np.testing.assert_array_equal(tree["tracks"]["track_id"], [1020, 1021, 1022, 1030])
    np.testing.assert_array_equal(offsets["jets"], [0, 0, 1, 2])
    np.testing.assert_array_equal(offsets["tracks"], [0, 3, 4])
    selected, counts = select_tree(NESTED, tree, offsets, np.array([2, 1]))  # events 13, 12
    np.testing.assert_array_equal(selected["events"]["number"], [13, 12])
    np.testing.assert_array_equal(selected["jets"]["jet_id"], [103, 102])
    np.testing.assert_array_equal(counts["jets"], [1, 1])
    np.testing.assert_array_equal(selected["tracks"]["track_id"], [1030, 1020, 1021, 1022])
    np.testing.assert_array_equal(counts["tracks"], [1, 3])


def test_file_without_rows_is_readable(tmp_path):
    path = tmp_path / "empty.h5"
    with RaggedWriter(path, SCHEMA, ATTRS) as writer:
        writer.append(*batch([], []))
    with RaggedReader(path, SCHEMA) as reader:
        assert reader.n_rows("events") == 0 and reader.n_rows("hits") == 0
        np.testing.assert_array_equal(reader.offsets("hits"), [0])
        assert reader.read("hits")["x"].dtype == np.float32


# --- failures while writing ----------------------------------------------------------------


def injected(*args):
    raise OSError(errno.EIO, "injected I/O error")


@pytest.mark.parametrize("step", ["create", "flush in append", "final flush", "close", "rename"])
def test_a_failing_step_removes_the_temporary_file_and_raises(tmp_path, monkeypatch, step):
    if step == "create":
        monkeypatch.setattr(RaggedWriter, "_create", injected)
    if step == "flush in append":
        monkeypatch.setattr(h5io, "FLUSH_ROWS", 1)
        monkeypatch.setattr(RaggedWriter, "_flush", injected)
    if step == "rename":
        monkeypatch.setattr(outputs.os, "replace", injected)
    with pytest.raises(OSError, match="injected"):
        with RaggedWriter(tmp_path / "out.h5", SCHEMA, ATTRS) as writer:
            if step == "final flush":
                monkeypatch.setattr(writer, "_flush", injected)
            if step == "close":
                close = writer._file.close
                monkeypatch.setattr(writer._file, "close", lambda: (close(), injected()))
            writer.append(*batch([0, 1], [2, 1]))
    assert list(tmp_path.iterdir()) == []


def limited_file_size(size: int):
    """A subprocess's preexec_fn: its files may not grow beyond ``size`` bytes; writes
    beyond fail with EFBIG ("File too large"), as they would with ENOSPC on a full disk."""
    def limit():
        # Ignored, SIGXFSZ no longer kills the process: the write fails instead.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


FULL_DISK_WRITER = """
import sys
import numpy as np
from pipeline.io.hdf5 import RaggedWriter
from test_h5io import ATTRS, SCHEMA, batch
try:
    with RaggedWriter(sys.argv[1], SCHEMA, ATTRS) as writer:
        for start in range(0, 400_000, 100_000):
            writer.append(*batch(np.arange(start, start + 100_000), np.full(100_000, 3)))
except OSError as err:
    print(err.errno, err.filename)
"""


def test_a_full_disk_is_one_error_naming_the_output(tmp_path):
    target = tmp_path / "out.h5"
    result = subprocess.run([sys.executable, "-c", FULL_DISK_WRITER, str(target)], cwd=Path(__file__).parent,
                            preexec_fn=limited_file_size(200_000), capture_output=True, text=True, timeout=120)
    # HDF5 never saw the failed writes: no errors printed while closing, no crash at exit.
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split() == [str(errno.EFBIG), str(target)]
    assert list(tmp_path.iterdir()) == []
