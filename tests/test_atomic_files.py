"""Outputs are written whole or not at all."""

import pytest

from edge_runtime import atomic_files


def test_successful_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "model.tflite"
    atomic_files.write_bytes_atomically(target, b"first")
    atomic_files.write_bytes_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert [path.name for path in target.parent.iterdir()] == ["model.tflite"]


def test_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_files.atomic_output(target) as temporary:
            temporary.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]


def test_temporary_keeps_the_suffix_writers_rely_on(tmp_path):
    with atomic_files.atomic_output(tmp_path / "model.keras") as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_bytes(b"x")


def test_writer_that_produces_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.onnx: the writer produced no file"):
        with atomic_files.atomic_output(tmp_path / "model.onnx"):
            pass
    assert not (tmp_path / "model.onnx").exists()
