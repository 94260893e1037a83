"""Bad inputs and failing outputs, in one table: each gives one error line that names the
file and says what is wrong, through the readers and through the `pipeline` command.

Most rows damage a small file of the test schema (tests/test_h5io.py); a few run real
stages on the session's tiny data set, two of them against a real full disk: a file-size
limit (RLIMIT_FSIZE) makes writes fail with EFBIG, "File too large", as ENOSPC would.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from test_h5io import SCHEMA, batch, limited_file_size, write_file

from pipeline.cli import main
from pipeline.io.hdf5 import DataFileError, FileSchema, RaggedReader, read_tree
from pipeline.simulation import formats
from pipeline.simulation.formats import TRACK_JETS


@dataclasses.dataclass
class Fault:
    """A `pipeline` command that must fail with one line naming ``path``."""

    argv: list[str]
    path: Path
    #: Also read the file with RaggedReader against this schema: a DataFileError naming it.
    schema: FileSchema | None = None
    #: Run the command in a subprocess whose files may not grow beyond this many bytes.
    fsize: int | None = None
    #: Outputs that must not exist afterwards (nor temporary files beside them).
    outputs: tuple[Path, ...] = ()


@dataclasses.dataclass
class Place:
    tmp: Path
    real: dict  # {"particle_jets": path, "track_jets": path, "config": path}

    def good(self) -> Path:
        """A fresh good file of the test schema: 5 events with 2, 0, 3, 1, 4 hits."""
        return write_file(self.tmp / "good.h5", [batch([0, 1, 2], [2, 0, 3]), batch([3, 4], [1, 4])])

    def copy(self, kind: str) -> Path:
        """A copy of the session's real file of that kind, to damage."""
        return Path(shutil.copy(self.real[kind], self.tmp / f"{kind}.h5"))


def inspect(path: Path, schema: FileSchema = SCHEMA) -> Fault:
    return Fault(["inspect", str(path)], path, schema=schema)


def edited(edit):
    """A row's maker: the good test file, edited in place with h5py."""
    def make(place: Place) -> Fault:
        path = place.good()
        with h5py.File(path, "r+") as f:
            edit(f)
        return inspect(path)
    return make


def replaced(name: str, data):
    """The good test file with dataset ``name`` replaced by ``data``."""
    def edit(f):
        del f[name]
        f.create_dataset(name, data=np.asarray(data))
    return edited(edit)


def set_attr(name: str, value):
    def edit(f):
        f.attrs[name] = value
    return edited(edit)


def del_attr(name: str):
    def edit(f):
        del f.attrs[name]
    return edited(edit)


def overwritten(path: Path, offset: int, size: int) -> Path:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return path


def damaged_header(name: str):
    """The good test file with the object header of group or dataset ``name`` overwritten."""
    def make(place: Place) -> Fault:
        path = place.good()
        with h5py.File(path, "r") as f:
            address = h5py.h5o.get_info(f[name].id).addr
        return inspect(overwritten(path, address, 16))
    return make




def truncated(place: Place) -> Fault:
    path = place.good()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return inspect(path)


def text_file(place: Place) -> Fault:
    path = place.tmp / "text.h5"
    path.write_text("this is not HDF5\n" * 100)
    return inspect(path)


def plain_hdf5(**attrs):
    """An HDF5 file of someone else's, with these file attributes."""
    def make(place: Place) -> Fault:
        path = place.tmp / "plain.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.arange(5))
            f.attrs.update(attrs)
        return inspect(path)
    return make


def other_schema(place: Place) -> Fault:
    path = write_file(place.tmp / "other.h5", [batch([0], [1])], schema=dataclasses.replace(SCHEMA, name="other_schema"))
    return inspect(path)


def missing_file(place: Place) -> Fault:
    return inspect(place.tmp / "absent.h5")


def directory(place: Place) -> Fault:
    path = place.tmp / "directory.h5"
    path.mkdir()
    return inspect(path)


def real_edited(kind: str, edit):
    """The session's real file of that kind, copied and edited; inspected."""
    def make(place: Place) -> Fault:
        path = place.copy(kind)
        with h5py.File(path, "r+") as f:
            edit(f)
        return inspect(path, TRACK_JETS)
    return make


def past_the_data(f):
    f["tracks/offsets"][-1] = f["tracks/offsets"][-1] + 1


def garbage_config(f):
    f.attrs["config"] = "{'seed': 1"


def tracker(place: Place, *, source: Path | None = None, output: Path | None = None, fsize: int | None = None) -> Fault:
    source = source if source is not None else place.real["particle_jets"]
    output = output if output is not None else place.tmp / "out" / "tracks.h5"
    argv = ["simulate-tracker", "--config", str(place.real["config"]), "--input", str(source),
            "--output", str(output), "--quiet"]
    return Fault(argv, output, fsize=fsize, outputs=(output,) if not output.is_dir() else ())


def full_disk_tracker(place: Place) -> Fault:
    return tracker(place, fsize=100_000)


def split(place: Place, source: Path, fsize: int | None = None) -> Fault:
    out = place.tmp / "splits"
    outputs = tuple(out / f"{name}.h5" for name in ("train", "val", "test"))
    argv = ["split", "--config", str(place.real["config"]), "--sample", "tiny", "--inputs", str(source),
            "--train", str(outputs[0]), "--val", str(outputs[1]), "--test", str(outputs[2])]
    return Fault(argv, source, schema=TRACK_JETS, fsize=fsize, outputs=outputs)


def full_disk_split(place: Place) -> Fault:
    fault = split(place, place.real["track_jets"], fsize=150_000)
    # Any of the three outputs may be the first to fill the disk.
    return dataclasses.replace(fault, path=place.tmp / "splits", schema=None)


def damaged_chunk(place: Place) -> Fault:
    """A compressed chunk of track data overwritten: the file opens, reading its rows fails."""
    path = place.copy("track_jets")
    with h5py.File(path, "r") as f:
        chunk = f["tracks/d0"].id.get_chunk_info(0)
    return split(place, overwritten(path, chunk.byte_offset, chunk.size))


def missing_input(place: Place) -> Fault:
    fault = tracker(place, source=place.tmp / "absent.h5")
    return dataclasses.replace(fault, path=place.tmp / "absent.h5")


def directory_input(place: Place) -> Fault:
    (place.tmp / "in.h5").mkdir()
    fault = tracker(place, source=place.tmp / "in.h5")
    return dataclasses.replace(fault, path=place.tmp / "in.h5")


def directory_output(place: Place) -> Fault:
    (place.tmp / "out.h5").mkdir()
    return tracker(place, output=place.tmp / "out.h5")


def output_below_a_file(place: Place) -> Fault:
    (place.tmp / "notes.txt").write_text("a file, not a directory")
    fault = tracker(place, output=place.tmp / "notes.txt" / "tracks.h5")
    return dataclasses.replace(fault, path=place.tmp / "notes.txt", outputs=())


def unwritable_output_directory(place: Place) -> Fault:
    out = place.tmp / "readonly"
    out.mkdir()
    out.chmod(0o555)
    return tracker(place, output=out / "tracks.h5")


AS_USER = pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")

# (id, maker of the fault, what the message must say besides the path[, marks])
CASES = [
    ("missing file", missing_file, "file not found"),
    ("directory instead of a file", directory, "is a directory"),
    ("truncated", truncated, "not a readable HDF5 file"),
    ("not HDF5", text_file, "not a readable HDF5 file"),
    ("HDF5 without schema", plain_hdf5(), "not a pipeline file"),
    ("foreign schema attribute, no version", plain_hdf5(schema="sky_catalogue"), "not a pipeline file"),
    ("schema without version", del_attr("schema_version"), "not a pipeline file"),
    ("non-integer version", set_attr("schema_version", "3"), "is not an integer"),
    ("fractional version", set_attr("schema_version", 3.5), "is not an integer"),
    ("other schema", other_schema, "other_schema"),
    ("newer version", set_attr("schema_version", SCHEMA.version + 1), "is newer"),
    ("older version", set_attr("schema_version", SCHEMA.version - 1), "is older"),
    ("incomplete", del_attr("complete"), "incomplete file"),
    ("missing collection", edited(lambda f: f.__delitem__("hits")), "lacks collection 'hits'"),
    ("missing field", edited(lambda f: f["hits"].__delitem__("layer")), "lacks fields ['layer']"),
    ("fields of unequal length", replaced("hits/layer", np.zeros(9, "i1")), "differ in length"),
    ("2-d rows where 1-d are declared", replaced("hits/x", np.zeros((10, 2), "f4")), "expected (rows)"),
    ("offsets missing", edited(lambda f: f["hits"].__delitem__("offsets")), "lacks hits/offsets"),
    ("offsets not integer", replaced("hits/offsets", [0.0, 2, 2, 5, 6, 10]), "expected 1-d integers"),
    ("offsets too short", replaced("hits/offsets", [0, 2, 5, 6, 10]), "has 5 entries, expected 6"),
    ("offsets not starting at 0", replaced("hits/offsets", [1, 2, 2, 5, 6, 10]), "starts at 1, expected 0"),
    ("offsets decreasing", replaced("hits/offsets", [0, 2, 1, 5, 6, 10]), "decreases at entry 2"),
    ("offsets ending beyond the data", replaced("hits/offsets", [0, 2, 2, 5, 6, 11]), "ends at 11, but hits has 10 rows"),
    ("offsets ending before the data", replaced("hits/offsets", [0, 2, 2, 5, 6, 9]), "ends at 9, but hits has 10 rows"),
    ("damaged group header", damaged_header("hits"), "damaged file"),
    ("damaged dataset header", damaged_header("hits/x"), "damaged file"),
    ("config not JSON", set_attr("config", "{'seed': 1"), "'config' attribute is not JSON"),
    ("config not an object", set_attr("config", "[1, 2]"), "'config' attribute is a JSON list"),
    ("real file: offsets beyond the data", real_edited("track_jets", past_the_data), "tracks/offsets ends at"),
    ("real file: config not JSON", real_edited("track_jets", garbage_config), "'config' attribute is not JSON"),
    ("tracker: missing input", missing_input, "file not found"),
    ("tracker: input is a directory", directory_input, "is a directory"),
    ("tracker: output is a directory", directory_output, "Is a directory"),
    ("tracker: output below a file", output_below_a_file, "Not a directory"),
    ("tracker: unwritable output directory", unwritable_output_directory, "Permission denied", AS_USER),
    ("tracker: full disk", full_disk_tracker, "File too large"),
    ("split: damaged data chunk", damaged_chunk, "reading tracks rows"),
    ("split: full disk", full_disk_split, "File too large"),
]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory, tiny_files, tiny_config_session) -> dict:
    config = tmp_path_factory.mktemp("bad_inputs") / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_session))
    return {**tiny_files, "config": config}


def read_everything(path: Path, schema: FileSchema) -> None:
    with RaggedReader(path, schema) as reader:
        reader.config
        read_tree(reader, 0, reader.n_rows(schema.collections[0].name))


def run_pipeline(fault: Fault, capsys) -> tuple[int, str]:
    """(exit status, stderr) of the command: in a subprocess if it needs a file-size limit."""
    if fault.fsize is None:
        capsys.readouterr()
        status = main(fault.argv)
        return status, capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "pipeline", *fault.argv], capture_output=True, text=True,
                            timeout=300, preexec_fn=limited_file_size(fault.fsize))
    return result.returncode, result.stderr


@pytest.mark.parametrize("make, fragment", [pytest.param(*row[1:3], id=row[0], marks=row[3:]) for row in CASES])
def test_bad_input_gives_one_line_naming_the_file(make, fragment, tmp_path, real_files, monkeypatch, capsys):
    # `pipeline inspect` knows the test schema too.
    monkeypatch.setitem(formats.SCHEMAS, SCHEMA.name, SCHEMA)
    fault = make(Place(tmp_path, real_files))
    if fault.schema is not None:
        with pytest.raises(DataFileError) as info:
            read_everything(fault.path, fault.schema)
        assert str(fault.path) in str(info.value) and fragment in str(info.value), str(info.value)

    status, stderr = run_pipeline(fault, capsys)

    assert status == 2, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"pipeline {fault.argv[0]}: error: ")]
    assert len(errors) == 1 and errors[0] == stderr.splitlines()[-1], stderr
    assert str(fault.path) in errors[0] and fragment in errors[0], errors[0]
    for output in fault.outputs:
        assert not output.exists(), output
        if output.parent.is_dir():
            assert not [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.stem}.tmp")]
