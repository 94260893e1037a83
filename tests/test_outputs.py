"""Atomic outputs: a failed write leaves neither a partial target nor a temporary file."""

import errno
import os
import subprocess
import sys

import pytest

from pipeline.io.outputs import atomic_output, check_output_directory, write_text


def test_atomic_output_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "table.md"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".md" and tmp != target
        tmp.write_text("ok")
        assert not target.exists()
    assert target.read_text() == "ok"
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]


def test_atomic_output_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = write_text(tmp_path / "metrics.csv", "old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("job killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_directory_in_place_of_the_output_fails_before_the_work(tmp_path):
    target = tmp_path / "metrics.csv"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        with atomic_output(target):
            pytest.fail("the block ran")
    assert info.value.filename == str(target)


def test_an_output_below_a_file_names_that_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(NotADirectoryError) as info:
        write_text(tmp_path / "notes.txt" / "table.md", "x")
    assert info.value.filename == str(tmp_path / "notes.txt")


def test_a_failed_rename_removes_the_temporary_file_and_names_the_target(tmp_path):
    target = tmp_path / "table.md"
    with pytest.raises(IsADirectoryError) as info:
        with atomic_output(target) as tmp:
            tmp.write_text("done")
            target.mkdir()  # after the check, as another job might
    assert info.value.filename == str(target) and info.value.filename2 is None
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "table.md"
    with pytest.raises(OSError) as info:
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() on a full disk
    assert info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    live = subprocess.Popen(["sleep", "60"])
    try:
        try:
            os.kill(dead, 0)
            pytest.skip(f"pid {dead} was reused already")
        except ProcessLookupError:
            pass
        killed = tmp_path / f".table.tmp{dead}.md"
        writing = tmp_path / f".table.tmp{live.pid}.md"
        other_output = tmp_path / f".other.tmp{dead}.md"
        for path in (killed, writing, other_output):
            path.write_text("partial")
        write_text(tmp_path / "table.md", "done")
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([writing.name, other_output.name, "table.md"])


def test_the_output_directory_is_checked_before_the_first_write(tmp_path, monkeypatch):
    check_output_directory(tmp_path / "results")  # absent: it will be made
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a directory: the workflow writes"):
        check_output_directory(tmp_path / "file")
    # Read-only (as seen by a user who is not root: root may write anywhere).
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(tmp_path))
    with pytest.raises(PermissionError, match=f"{tmp_path} is not writable by this user.*snakemake --directory"):
        check_output_directory(tmp_path / "results" / "deeper")
