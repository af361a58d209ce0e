"""Labelled samples collected on the device (`serve --collect DIR`), and turning them into training data.

One sample is one file, `sample-<nanoseconds>-<id>.npz`, holding what came in and what was said
about it: the uploaded file's bytes as they arrived (`upload`, empty for JSON pixels) and its name,
the image the model saw as uint8 (`seen`), the person's label, both models' labels and
probabilities (-1 and an empty array when the float reference is absent), the class names and the
time. Every sample is written to a hidden temporary name, flushed to the disk (fsync) and renamed
into place, so a kill -9 or a power cut leaves either the whole file or none; a leftover
temporary is ignored by readers and deleted the next time a folder is opened for writing.

The folder is capped by count and by bytes; the oldest samples go first (the names sort by age).
`write_keras_npz` turns a folder into the Keras-npz layout training and compare read.
"""

import bisect
import dataclasses
import hashlib
import os
import pathlib
import re
import threading
import time
import zipfile

import numpy as np

from edge_runtime import errors

SAMPLE_NAME = re.compile(r"^sample-(\d{20})-([0-9a-f]{1,64})\.npz$")
TEMPORARY_PREFIX = ".sample-"
DEFAULT_MAX_SAMPLES = 10_000
DEFAULT_MAX_BYTES = 500_000_000
DEFAULT_TEST_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled input as collected (see the module doc for the meaning of each field)."""

    id: str
    time: float
    label: int
    int8_label: int
    float_label: int  # -1: no float reference in the bundle
    seen: np.ndarray  # uint8 (H, W) or (H, W, C): the model's input, scaled to 0..255
    upload: bytes = b""
    upload_name: str = ""
    int8_probabilities: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    float_probabilities: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    class_names: tuple = ()


def sample_file_name(sample_id, nanoseconds=None):
    """The file name a sample gets: its time in nanoseconds (so names sort by age), then its id."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", sample_id):
        raise errors.InputError(f"sample id {sample_id[:70]!r} is not lower-case hex")
    return f"sample-{time.time_ns() if nanoseconds is None else nanoseconds:020d}-{sample_id}.npz"


def sample_files(directory):
    """The sample files in `directory`, oldest first (temporaries and anything else are left out)."""
    directory = pathlib.Path(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise errors.InputError(f"{directory}: no such samples folder") from None
    except NotADirectoryError:
        raise errors.InputError(f"{directory}: not a folder") from None
    except OSError as error:
        raise errors.InputError(f"{directory}: cannot list: {error.strerror or error}") from None
    return [directory / name for name in sorted(names) if SAMPLE_NAME.match(name)]


class SampleFolder:
    """A folder that keeps at most `max_samples` samples and `max_bytes` bytes, dropping the oldest.

    Safe to share between threads. Opening it deletes temporaries a killed writer left behind.
    Raises (on opening): InputError when the folder cannot be created or listed.
    """

    def __init__(self, directory, max_samples=DEFAULT_MAX_SAMPLES, max_bytes=DEFAULT_MAX_BYTES):
        if max_samples < 1 or max_bytes < 1:
            raise errors.InputError(f"a samples folder needs room for at least one sample, got {max_samples} "
                                    f"samples and {max_bytes} bytes")
        self.directory = pathlib.Path(directory)
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name in os.listdir(self.directory):
                if name.startswith(TEMPORARY_PREFIX):
                    (self.directory / name).unlink(missing_ok=True)
        except OSError as error:
            raise errors.InputError(f"{self.directory}: cannot use as the samples folder: "
                                    f"{error.strerror or error}") from None
        self._files = [(path, path.stat().st_size) for path in sample_files(self.directory)]
        self.removed = 0
        with self._lock:
            self._enforce_caps()

    @property
    def count(self):
        return len(self._files)

    @property
    def bytes(self):
        return sum(size for _, size in self._files)

    def add(self, sample):
        """Write `sample` whole or not at all, then drop the oldest samples over the caps.

        Returns the new file's path. Raises: InputError when the sample alone is over the byte cap,
        OSError when the disk refuses the write (nothing is left behind).
        """
        path = self.directory / sample_file_name(sample.id)
        temporary = self.directory / f"{TEMPORARY_PREFIX}{sample.id}.{threading.get_ident()}.partial"
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, **sample_arrays(sample))
                handle.flush()
                os.fsync(handle.fileno())
            size = temporary.stat().st_size
            if size > self.max_bytes:
                raise errors.InputError(f"sample {sample.id}: {size:,} bytes is over the folder's "
                                        f"{self.max_bytes:,}-byte cap; not kept")
            with self._lock:
                # Room first, then the rename: killed in between, the folder holds less than its
                # caps, never more.
                self._enforce_caps(incoming=size)
                os.replace(temporary, path)
                sync_directory(self.directory)
                # By name, i.e. by the time the sample arrived, whichever writer finished first.
                bisect.insort(self._files, (path, size))
        finally:
            temporary.unlink(missing_ok=True)
        return path

    def _enforce_caps(self, incoming=None):
        """Drop the oldest samples until the folder is within its caps, with room for one more
        sample of `incoming` bytes when given (lock held)."""
        total = sum(size for _, size in self._files) + (incoming or 0)
        allowed = self.max_samples - (incoming is not None)
        while self._files and (len(self._files) > allowed or total > self.max_bytes):
            oldest, size = self._files.pop(0)
            oldest.unlink(missing_ok=True)
            total -= size
            self.removed += 1


def sync_directory(directory):
    """fsync a directory so that a rename in it survives a power cut (no-op where unsupported)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def sample_arrays(sample):
    """The arrays a sample file holds; strings as numpy unicode, so reading needs no pickle."""
    return {
        "id": np.array(sample.id),
        "time": np.array(sample.time, dtype=np.float64),
        "label": np.array(sample.label, dtype=np.int64),
        "int8_label": np.array(sample.int8_label, dtype=np.int64),
        "float_label": np.array(sample.float_label, dtype=np.int64),
        "seen": np.asarray(sample.seen, dtype=np.uint8),
        "upload": np.frombuffer(sample.upload, dtype=np.uint8),
        "upload_name": np.array(sample.upload_name),
        "int8_probabilities": np.asarray(sample.int8_probabilities, dtype=np.float32),
        "float_probabilities": np.asarray(sample.float_probabilities, dtype=np.float32),
        "class_names": np.array(list(sample.class_names), dtype=str),
    }


def read_sample(path):
    """Read one sample file; InputError naming it when it is not one."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        return Sample(
            id=str(arrays["id"]), time=float(arrays["time"]), label=int(arrays["label"]),
            int8_label=int(arrays["int8_label"]), float_label=int(arrays["float_label"]),
            seen=arrays["seen"], upload=arrays["upload"].tobytes(), upload_name=str(arrays["upload_name"]),
            int8_probabilities=arrays["int8_probabilities"], float_probabilities=arrays["float_probabilities"],
            class_names=tuple(str(name) for name in arrays["class_names"]),
        )
    except KeyError as error:
        raise errors.InputError(f"{path}: not a sample file: no {error} array") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise errors.InputError(f"{path}: not a readable sample file: {error}") from None


def read_folder(directory):
    """Every usable sample in `directory`, oldest first, and one line per file left out: unreadable,
    labelled outside the classes the sample was collected for (its `class_names`, those of the
    model that served it), or a repeat of an id already read (the oldest file of an id is kept).
    """
    samples, problems, seen_ids = [], [], {}
    for path in sample_files(directory):
        try:
            sample = read_sample(path)
        except errors.InputError as error:
            problems.append(str(error))
            continue
        classes = len(sample.class_names)
        if sample.label < 0 or (classes and sample.label >= classes):
            allowed = f"the model's {classes} classes (0..{classes - 1})" if classes else "the class indices (0 or more)"
            problems.append(f"{path}: label {sample.label} is outside {allowed}")
        elif sample.id in seen_ids:
            problems.append(f"{path}: sample id {sample.id} repeats {seen_ids[sample.id].name}; counted once")
        else:
            seen_ids[sample.id] = path
            samples.append(sample)
    return samples, problems


def in_test_split(sample_id, test_fraction):
    """Whether a sample belongs to the test split: decided by its id's hash alone, so a sample stays
    in its split however the folder grows, and is never trained on once it was tested on."""
    position = int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 2**32
    return position < test_fraction


def write_keras_npz(samples, path, test_fraction=DEFAULT_TEST_FRACTION):
    """Write `samples` as a Keras-layout .npz (x_train, y_train, x_test, y_test, uint8 and int64).

    The split is by id hash (`in_test_split`); with at least two samples each split gets at least
    one. `class_names` is added when the samples carry them. Returns (train count, test count).
    Raises: InputError for fewer than two samples, or images of different shapes.
    """
    if len(samples) < 2:
        raise errors.InputError(f"{len(samples)} labelled sample(s): at least two are needed, one to train on and one to test")
    if not 0.0 < test_fraction < 1.0:
        raise errors.InputError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    shapes = {sample.seen.shape for sample in samples}
    if len(shapes) != 1:
        raise errors.InputError(f"samples have images of different shapes {sorted(shapes)}: they came from different models")
    class_lists = {sample.class_names for sample in samples if sample.class_names}
    if len(class_lists) > 1:
        raise errors.InputError(f"samples were labelled with {len(class_lists)} different class lists: they came from "
                                "different models; collect each model's samples into a folder of its own")
    test = [in_test_split(sample.id, test_fraction) for sample in samples]
    if all(test) or not any(test):
        # Too few samples for the hashes to split them: the one nearest the cut changes side.
        positions = [int(hashlib.sha256(sample.id.encode()).hexdigest()[:8], 16) for sample in samples]
        nearest = (max if all(test) else min)(range(len(samples)), key=positions.__getitem__)
        test[nearest] = not test[nearest]
    train_part = [sample for sample, is_test in zip(samples, test) if not is_test]
    test_part = [sample for sample, is_test in zip(samples, test) if is_test]
    arrays = {
        "x_train": np.stack([sample.seen for sample in train_part]).astype(np.uint8),
        "y_train": np.array([sample.label for sample in train_part], dtype=np.int64),
        "x_test": np.stack([sample.seen for sample in test_part]).astype(np.uint8),
        "y_test": np.array([sample.label for sample in test_part], dtype=np.int64),
    }
    names = next((sample.class_names for sample in samples if sample.class_names), ())
    if names:
        arrays["class_names"] = np.array(list(names), dtype=str)
    from edge_runtime import atomic_files

    path = pathlib.Path(path)
    if path.is_dir():
        raise errors.InputError(f"{path}: is a directory; --out takes a file name, e.g. {path / 'samples.npz'}")
    try:
        with atomic_files.atomic_output(path) as temporary:
            np.savez_compressed(temporary, **arrays)
    except OSError as error:
        # A read-only folder, a full disk or a file-size limit: the temporary file is gone already.
        raise errors.InputError(f"{path}: cannot write: {error.strerror or error}; nothing was written") from None
    return len(train_part), len(test_part)


def summary(samples):
    """Counts for people: samples, per label, and how often each model was right."""
    labelled = len(samples)
    int8_right = sum(sample.int8_label == sample.label for sample in samples)
    with_float = [sample for sample in samples if sample.float_label >= 0]
    float_right = sum(sample.float_label == sample.label for sample in with_float)
    return {
        "samples": labelled,
        "per_label": {int(label): int(count) for label, count in
                      zip(*np.unique([sample.label for sample in samples], return_counts=True))} if samples else {},
        "int8_right": int(int8_right),
        "float_right": int(float_right),
        "with_float": len(with_float),
    }
