"""The samples folder of `serve --collect`: whole files or none, caps by count and bytes, the split,
the Keras-npz layout, and the `samples` command's errors."""

import os

import numpy as np
import pytest

from conftest import run_cli
from edge_runtime import errors, samples


def sample(index, upload_bytes=0, label=None):
    rng = np.random.default_rng(index)
    return samples.Sample(
        id=f"{index:032x}", time=1.7e9 + index, label=index % 10 if label is None else label, int8_label=index % 10,
        float_label=(index + 1) % 10, seen=rng.integers(0, 256, (28, 28), dtype=np.uint8),
        upload=rng.integers(0, 256, upload_bytes, dtype=np.uint8).tobytes(), upload_name=f"digit{index}.png",
        int8_probabilities=np.full(10, 0.1, np.float32), float_probabilities=np.full(10, 0.1, np.float32),
        class_names=tuple(str(digit) for digit in range(10)))


def test_a_sample_reads_back_as_written(tmp_path):
    folder = samples.SampleFolder(tmp_path / "s")
    written = sample(3, upload_bytes=5000)
    path = folder.add(written)
    assert samples.SAMPLE_NAME.match(path.name) and path.name.endswith(f"-{written.id}.npz")
    read = samples.read_sample(path)
    assert read.upload == written.upload and np.array_equal(read.seen, written.seen)
    assert (read.id, read.label, read.int8_label, read.float_label, read.upload_name, read.class_names) == \
        (written.id, written.label, written.int8_label, written.float_label, written.upload_name, written.class_names)
    assert os.listdir(tmp_path / "s") == [path.name]  # no temporary left


def test_the_count_cap_drops_the_oldest(tmp_path):
    folder = samples.SampleFolder(tmp_path, max_samples=3)
    paths = [folder.add(sample(index)) for index in range(5)]
    assert [path.name for path in samples.sample_files(tmp_path)] == [path.name for path in paths[2:]]
    assert folder.count == 3 and folder.removed == 2


def test_the_byte_cap_holds_and_a_reopened_folder_keeps_it(tmp_path):
    one = samples.SampleFolder(tmp_path / "probe").add(sample(0, upload_bytes=10_000)).stat().st_size
    cap = int(2.5 * one)
    folder = samples.SampleFolder(tmp_path / "s", max_bytes=cap)
    for index in range(6):
        folder.add(sample(index, upload_bytes=10_000))
        assert sum(path.stat().st_size for path in samples.sample_files(tmp_path / "s")) <= cap
    assert folder.count == 2
    # A smaller cap on the next start drops the oldest at once.
    assert samples.SampleFolder(tmp_path / "s", max_samples=1).count == 1


def test_a_sample_over_the_byte_cap_is_refused_whole(tmp_path):
    folder = samples.SampleFolder(tmp_path, max_bytes=20_000)
    folder.add(sample(0))
    with pytest.raises(errors.InputError, match="over the folder's 20,000-byte cap; not kept"):
        folder.add(sample(1, upload_bytes=50_000))
    assert folder.count == 1 and len(os.listdir(tmp_path)) == 1


def test_a_killed_writers_temporary_is_ignored_then_removed(tmp_path):
    samples.SampleFolder(tmp_path).add(sample(0))
    leftover = tmp_path / f"{samples.TEMPORARY_PREFIX}{'a' * 32}.1234.partial"
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    (tmp_path / "notes.txt").write_text("not a sample")
    found, problems = samples.read_folder(tmp_path)
    assert len(found) == 1 and problems == []
    samples.SampleFolder(tmp_path)
    assert not leftover.exists() and (tmp_path / "notes.txt").exists()


def test_an_unreadable_sample_is_reported_not_fatal(tmp_path):
    samples.SampleFolder(tmp_path).add(sample(0))
    (tmp_path / samples.sample_file_name("b" * 32)).write_bytes(b"garbage")
    found, problems = samples.read_folder(tmp_path)
    assert len(found) == 1 and len(problems) == 1 and "not a readable sample file" in problems[0]


def test_the_split_is_by_id_and_stable_as_the_folder_grows(tmp_path):
    many = [sample(index) for index in range(400)]
    small_train, small_test = samples.write_keras_npz(many[:200], tmp_path / "small.npz", 0.25)
    samples.write_keras_npz(many, tmp_path / "large.npz", 0.25)
    with np.load(tmp_path / "small.npz") as small, np.load(tmp_path / "large.npz") as large:
        assert set(small.files) >= {"x_train", "y_train", "x_test", "y_test"}
        assert small["x_test"].dtype == np.uint8 and small["y_test"].dtype == np.int64
        # Whatever was a test image stays one: the first 200 samples' test images lead the larger file's.
        assert np.array_equal(large["x_test"][:small_test], small["x_test"])
        assert list(large["class_names"]) == [str(digit) for digit in range(10)]
    assert 30 <= small_test <= 70 and small_train + small_test == 200


def test_two_samples_always_split_one_and_one(tmp_path):
    for first in range(20):
        assert samples.write_keras_npz([sample(first), sample(first + 100)], tmp_path / "two.npz") == (1, 1)
    with pytest.raises(errors.InputError, match="at least two are needed"):
        samples.write_keras_npz([sample(0)], tmp_path / "one.npz")


def test_the_training_data_takes_them_first(tmp_path):
    from train import data

    samples.write_keras_npz([sample(index) for index in range(20)], tmp_path / "extra.npz")
    base = data.Dataset(np.zeros((50, 28, 28), np.uint8), np.zeros(50, np.uint8) + 9,
                        np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.uint8))
    with np.load(tmp_path / "extra.npz") as archive:
        extra_x, extra_y = archive["x_train"], archive["y_train"]
    combined = data.with_extra_training_data(base, tmp_path / "extra.npz")
    # First, because Keras' validation_split takes the *last* part: appended, they would never be trained on.
    assert np.array_equal(combined.x_train[: len(extra_x)], extra_x)
    assert combined.y_train[: len(extra_y)].tolist() == extra_y.tolist() and len(combined.x_train) == 50 + len(extra_x)
    assert combined.x_test is base.x_test
    np.savez(tmp_path / "bad.npz", x_train=extra_x, y_train=np.full(len(extra_x), 10), x_test=extra_x[:1], y_test=[0])
    with pytest.raises(data.DataError, match="label 10 is outside the training data's 10 classes"):
        data.with_extra_training_data(base, tmp_path / "bad.npz")
    np.savez(tmp_path / "small.npz", x_train=extra_x[:, :14], y_train=extra_y, x_test=extra_x[:1, :14], y_test=[0])
    with pytest.raises(data.DataError, match=r"images are \(14, 28\), the training data's are \(28, 28\)"):
        data.with_extra_training_data(base, tmp_path / "small.npz")


# Exit statuses as the CLI documents them (edge_runtime/cli/main.py): 1 for a bad file or input, 2 for a bad option.
@pytest.mark.parametrize("arguments, status, message", [
    (["{missing}"], 1, "no such samples folder"),
    (["{empty}", "--out", "{empty}/x.npz"], 1, "0 labelled sample(s): at least two are needed"),
    (["{empty}", "--test-fraction", "1"], 2, "must be a number between 0 and 1"),
])
def test_the_samples_command_fails_in_one_line(tmp_path, arguments, status, message):
    (tmp_path / "empty").mkdir()
    result = run_cli("-m", "edge_runtime", "samples",
                     *[argument.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for argument in arguments])
    assert result.returncode == status and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_room_is_made_before_the_rename(tmp_path, monkeypatch):
    """A writer that dies at the rename (as a kill -9 there would) leaves the folder within its cap."""
    folder = samples.SampleFolder(tmp_path, max_samples=3)
    for index in range(3):
        folder.add(sample(index))

    def dies(source, target):
        raise OSError("killed at the rename")

    monkeypatch.setattr(samples.os, "replace", dies)
    with pytest.raises(OSError, match="killed at the rename"):
        folder.add(sample(9))
    assert len(samples.sample_files(tmp_path)) == 2 and len(os.listdir(tmp_path)) == 2


def test_samples_and_the_shared_statistics_need_no_tensorflow(tmp_path):
    """The device side: `mnist-edge samples` runs with TensorFlow unimportable, and the statistics
    compare and serve share import nothing beyond numpy and the standard library."""
    import ast
    import pathlib
    import sys

    from tests.test_runtime_cli import BLOCK_TENSORFLOW

    folder = samples.SampleFolder(tmp_path / "s")
    for index in range(4):
        folder.add(sample(index))
    result = run_cli("-c", BLOCK_TENSORFLOW, "samples", str(tmp_path / "s"), "--out", str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr
    assert "heavy modules loaded: []" in result.stderr and "4 labelled samples" in result.stdout
    for module in ("statistics.py", "samples.py"):
        tree = ast.parse((pathlib.Path(samples.__file__).parent / module).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= set(sys.stdlib_module_names) | {"numpy", "edge_runtime"}, (module, imported)
