"""Atomic outputs: a failed write leaves neither a partial target nor a temporary file."""

import pytest

from pipeline.outputs import atomic_output, write_text


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
