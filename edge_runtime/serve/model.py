"""The model behind the service: load it from a bundle, classify uploads and pixels, check it at start-up.

This is the one module of `edge_runtime.serve` that calls into the rest of `edge_runtime`
(classifier, images, evaluation, manifest and the gate `eval` applies), so that a change of their
API is a change here alone.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
import threading
import time

import numpy as np

from edge_runtime import classifier, cli, errors, evaluation, images, manifest, preprocessing

DEFAULT_MODEL_NAME = "model_int8.tflite"
DEFAULT_TOLERANCE_POINTS = evaluation.DEFAULT_TOLERANCE_POINTS


@dataclasses.dataclass(frozen=True)
class SelfCheck:
    """The start-up gate's result: the served model on the bundled test set against the float model."""

    images: int
    accuracy: float
    float_accuracy: float | None
    float_accuracy_source: str  # where the float figure comes from (the manifest, or the float model run here)
    drop_points: float | None
    agreement_with_float: float | None
    tolerance_points: float
    failures: tuple  # one line per failed condition, the same lines `eval` prints
    seconds: float

    @property
    def passed(self):
        return not self.failures

    def as_dict(self):
        return {**dataclasses.asdict(self), "failures": list(self.failures), "passed": self.passed}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One request's images as the model sees them: float32 (N, 28, 28) in [0, 1], and their names."""

    pixels: np.ndarray
    names: list


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the model said about prepared images: probabilities (N, classes), and seconds spent in the model."""

    probabilities: np.ndarray
    seconds: float


class ServedModel:
    """One exported model of a bundle, shared by the server's worker threads.

    The interpreter is not safe to call from two threads at once, so calls into it hold a lock;
    image decoding and preparation, the expensive part of a request, happen outside it. One
    interpreter per worker thread was measured too: 16 clients, one core, it answered 15-25%
    fewer requests per second (the model is ~2% of a request's time; more interpreters only add
    memory and cache misses), so one interpreter and a lock it is.
    """

    def __init__(self, bundle_dir, model, document):
        self.bundle_dir = bundle_dir
        self.model = model
        self.document = document
        self.entry = document["files"].get(model.path.name, {}) if document else {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, bundle_dir, model_name=DEFAULT_MODEL_NAME, backend=None, threads=1):
        """Open `model_name` in the bundle directory, checked against the bundle's manifest.

        Raises: ModelFileError (no such directory, model or manifest), IntegrityError,
        BackendUnavailableError.
        """
        bundle_dir = pathlib.Path(bundle_dir)
        if not bundle_dir.is_dir():
            raise errors.ModelFileError(f"{bundle_dir}: no such bundle directory")
        path = bundle_dir / model_name
        document = manifest.read_manifest(bundle_dir / manifest.MANIFEST_NAME)
        model = classifier.Classifier.load(path, backend=backend, threads=threads, check_integrity=True)
        return cls(bundle_dir, model, document)

    @property
    def class_names(self):
        """The names of the output classes, in output order, as the export recorded them."""
        names = self.document.get("labels")
        if not names:
            names = [str(index) for index in range(self.model.output.shape[-1])]
        return [str(name) for name in names]

    def describe(self):
        """The model's facts for /api/info: file, sha256, backend, input shape, accuracy at export."""
        source = self.document.get("source_model", {})
        return {
            "model": self.model.path.name,
            "sha256": self.entry.get("sha256"),
            "backend": self.model.backend.name,
            "input_shape": list(preprocessing.INPUT_SHAPE),
            "class_names": self.class_names,
            "accuracy_at_export": self.entry.get("test_accuracy"),
            "float_accuracy_at_export": source.get("test_accuracy"),
            "test_set": self.document.get("test_set"),
        }

    def prepare_file(self, data, name):
        """Decode an uploaded image file (bytes) and make it an MNIST digit, as `predict` does.

        The bytes go through `edge_runtime.images` by way of a temporary file, removed afterwards.
        Raises: InputError with the same one-line message `predict` gives for that file.
        """
        if not data:
            raise errors.InputError(f"{name}: empty file, not an image")
        # A .npy batch would bypass the photo path's limits; uploads are image files only.
        handle = tempfile.NamedTemporaryFile(prefix="mnist-edge-upload-", suffix=".upload", delete=False)
        try:
            with handle:
                handle.write(data)
            pixels, _ = images.load_images([handle.name], names=[name])
        finally:
            os.unlink(handle.name)
        return Prepared(pixels=pixels, names=[name])

    def prepare_pixels(self, values, name):
        """Check pixels sent as numbers: integers 0–255 or floats in [0, 1], shaped (28, 28) or (N, 28, 28).

        These are the model's input as they are (light digit on dark), not a photo to prepare.
        Raises: InputError naming `name`.
        """
        try:
            array = np.asarray(values)
        except ValueError:
            raise errors.InputError(f"{name}: pixels must be a rectangular array of numbers") from None
        if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise errors.InputError(f"{name}: pixels must be numbers, got {array.dtype.kind!r} values")
        if np.issubdtype(array.dtype, np.integer):
            if array.size and (array.min() < 0 or array.max() > 255):
                raise errors.InputError(f"{name}: integer pixels must be 0..255, found {array.min()}..{array.max()}")
            array = array.astype(np.uint8)
        model_input = preprocessing.to_model_input(array, name=name)
        count = len(model_input)
        names = [name] if array.ndim == 2 else [f"{name}[{index}]" for index in range(count)]
        return Prepared(pixels=model_input[..., 0], names=names)

    def classify(self, prepared):
        """Run the model on prepared images; return an Outcome."""
        model_input = preprocessing.to_model_input(prepared.pixels, name=prepared.names[0])
        with self._lock:
            started = time.perf_counter()
            raw = self.model.predict_raw(model_input)
            seconds = time.perf_counter() - started
        return Outcome(probabilities=self.model.probabilities_from_raw(raw), seconds=seconds)

    def self_check(self, image_count=None, tolerance_points=DEFAULT_TOLERANCE_POINTS, threads=1):
        """Evaluate this model on the bundle's test set against the float model, with `eval`'s gate.

        `image_count` takes the first N test images (None: all). On the full set the float figure
        is the one recorded at export, exactly as `eval`; on a part of it, the float reference
        model is run here on the same images, since the export's figure is for the whole set.
        Returns: SelfCheck. Raises: InputError when the bundle has no readable test set.
        """
        started = time.perf_counter()
        test_images, labels = evaluation.load_test_set(self.bundle_dir / evaluation.TEST_SET_NAME)
        partial = image_count is not None and image_count < len(labels)
        if partial:
            test_images, labels = test_images[:image_count], labels[:image_count]
        reference_path = self.bundle_dir / evaluation.FLOAT_REFERENCE_NAME
        reference = None
        if reference_path.is_file() and reference_path != self.model.path:
            reference = evaluation.evaluate(reference_path, test_images, labels, threads=threads)
        result = evaluation.evaluate(self.model.path, test_images, labels, backend=self.model.backend.name,
                                     threads=threads, float_labels=None if reference is None else reference.labels)
        source = "manifest (whole test set)"
        if partial and reference is not None:
            result = dataclasses.replace(result, float_accuracy=reference.accuracy)
            source = f"{reference_path.name} run here on the same {len(labels)} images"
        failures = cli.eval_failures([result], tolerance_points, strict=False)
        return SelfCheck(
            images=result.images,
            accuracy=result.accuracy,
            float_accuracy=result.float_accuracy,
            float_accuracy_source=source,
            drop_points=result.drop_points,
            agreement_with_float=result.agreement_with_float,
            tolerance_points=tolerance_points,
            failures=tuple(failures),
            seconds=time.perf_counter() - started,
        )
