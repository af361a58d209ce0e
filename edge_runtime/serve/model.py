"""The model behind the service: load it from a bundle, classify uploads and pixels, check it at start-up.

This is the one module of `edge_runtime.serve` that calls into the model-running rest of
`edge_runtime` (classifier, images, evaluation, manifest and the gate `eval` applies), so that a
change of their API is a change here alone. It also holds the float reference model the live
checks compare with (`classify_float`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time

import numpy as np

from edge_runtime import backends, classifier, errors, evaluation, manifest, preprocessing
from edge_runtime.pictures import preparation

DEFAULT_MODEL_NAME = manifest.DEFAULT_FILE_NAMES["int8_tflite"]


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
    """One request's images as the model sees them: float32 (N, H, W) grey or (N, H, W, 3) colour in [0, 1], and their names."""

    pixels: np.ndarray
    names: list
    upload: bytes = b""  # the file as it was uploaded (empty for JSON pixels), kept for --collect


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

    def __init__(self, bundle_dir, model, document, reference=None, manifest_sha256=None):
        self.bundle_dir = bundle_dir
        self.model = model
        self.document = document
        self.reference = reference  # the float reference Classifier, or None when the bundle has none
        self.entry = document.files[model.path.name].details
        self.manifest_sha256 = manifest_sha256  # the export's identity: what the fleet compares as "version"
        self._lock = threading.Lock()
        self._reference_lock = threading.Lock()

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
        return cls(bundle_dir, model, document, load_reference(bundle_dir, document, backend, threads),
                   manifest_sha256=manifest.sha256_of(bundle_dir / manifest.MANIFEST_NAME))

    @property
    def top1_histogram(self):
        """(edges, counts) of the served model's top-1 probability on the test set, or None when the
        manifest has none (exported before label-free drift)."""
        counts = self.document.files[self.model.path.name].top1_counts
        return None if counts is None or self.document.top1_edges is None else (self.document.top1_edges, counts)

    @property
    def class_names(self):
        """The names of the output classes, in output order, as the export recorded them."""
        return list(self.model.class_names)

    def describe(self):
        """The model's facts for /api/info: file, sha256, backend, input shape, accuracy at export."""
        test_set = self.document.file_with_role(manifest.ROLE_TEST_SET)
        return {
            "model": self.model.path.name,
            "sha256": self.entry.get("sha256"),
            "manifest_sha256": self.manifest_sha256,
            "backend": self.model.backend.name,
            "input_shape": list(self.model.input_shape),
            "class_names": self.class_names,
            "preparation": self.document.preparation,
            "accuracy_at_export": self.entry.get("test_accuracy"),
            "float_accuracy_at_export": self.document.float_accuracy,
            "test_set": None if test_set is None else {"file": test_set, "images": self.document.files[test_set].images},
        }

    def prepare_file(self, data, name):
        """Decode an uploaded image file (bytes) and prepare it as the manifest says, as `predict` does.

        Raises: InputError with the same one-line message `predict` gives for that file.
        """
        if not data:
            raise errors.InputError(f"{name}: empty file, not an image")
        pixels, names = preparation.prepare_files([data], preparation.for_classifier(self.model), names=[name])
        return Prepared(pixels=self.as_pictures(pixels), names=names, upload=bytes(data))

    def as_pictures(self, model_input):
        """(N, H, W, C) model inputs as the page shows them: (N, H, W) when grey."""
        return model_input[..., 0] if model_input.shape[-1] == 1 else model_input

    def prepare_pixels(self, values, name):
        """Check pixels sent as numbers: integers 0–255 or floats in [0, 1], shaped like the model's input.

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
        model_input = preprocessing.to_model_input(array, self.model.input_shape, name=name)
        count = len(model_input)
        single = array.ndim == len(self.model.input_shape) - (1 if self.model.input_shape[2] == 1 else 0)
        names = [name] if single else [f"{name}[{index}]" for index in range(count)]
        return Prepared(pixels=self.as_pictures(model_input), names=names)

    @property
    def reference_name(self):
        return None if self.reference is None else self.reference.path.name

    def classify_float(self, pixels):
        """Run the float reference on prepared pixels (as in Prepared.pixels); return an Outcome.

        Its own lock: the float model and the served one can run at the same time.
        Raises: InputError when the bundle has no float reference (callers check `reference` first).
        """
        if self.reference is None:
            raise errors.InputError(f"{self.bundle_dir}: the bundle has no float reference model")
        model_input = preprocessing.to_model_input(pixels, self.reference.input_shape)
        with self._reference_lock:
            started = time.perf_counter()
            predictions = self.reference.predict(model_input)
            seconds = time.perf_counter() - started
        return Outcome(probabilities=predictions.probabilities, seconds=seconds)

    def classify(self, prepared):
        """Run the model on prepared images; return an Outcome."""
        model_input = preprocessing.to_model_input(prepared.pixels, self.model.input_shape, name=prepared.names[0])
        with self._lock:
            started = time.perf_counter()
            predictions = self.model.predict(model_input)
            seconds = time.perf_counter() - started
        return Outcome(probabilities=predictions.probabilities, seconds=seconds)

    def self_check(self, image_count=None, tolerance_points=None, threads=1):
        """Evaluate this model on the bundle's test set against the float model, with `eval`'s gate.

        `image_count` takes the first N test images (None: all); `tolerance_points` None means the
        manifest's. On the full set the float figure is the one recorded at export, exactly as
        `eval`; on a part of it, the float reference model is run here on the same images, since
        the export's figure is for the whole set.
        Returns: SelfCheck. Raises: InputError or IntegrityError when the bundle's test set is not
        the one the manifest describes.
        """
        started = time.perf_counter()
        document = self.document
        tolerance_points = document.tolerance_points if tolerance_points is None else tolerance_points
        test_set = document.file_with_role(manifest.ROLE_TEST_SET)
        if test_set is None:
            raise errors.InputError(f"{self.bundle_dir}: the manifest names no test set for the self-check")
        test_images, labels = evaluation.load_test_set(self.bundle_dir / test_set, document.input_shape,
                                                       document.num_classes, manifest=document)
        partial = image_count is not None and image_count < len(labels)
        if partial:
            test_images, labels = test_images[:image_count], labels[:image_count]
        reference_path = None if self.reference is None else self.reference.path
        reference = None
        if reference_path is not None and reference_path != self.model.path:
            reference = evaluation.evaluate(checking_copy(self.reference, threads), test_images, labels, document)
        result = evaluation.evaluate(checking_copy(self.model, threads), test_images, labels, document,
                                     float_labels=None if reference is None else reference.labels)
        source = "manifest (whole test set)"
        if partial and reference is not None:
            result = dataclasses.replace(result, float_accuracy=reference.accuracy)
            source = f"{reference_path.name} run here on the same {len(labels)} images"
        failures = evaluation.failures([result], tolerance_points, strict=False)
        if reference is not None and not partial:  # the manifest's float figures must hold, as in eval
            failures = evaluation.reference_failures(document, reference) + failures
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


def checking_copy(model, threads):
    """A second Classifier of the same file and backend, for the self-check alone.

    The check runs batches of hundreds of images, and an interpreter's tensor memory grows to fit
    the largest batch it has seen and is not given back (about 40 MiB for the float model here).
    On copies that are dropped after the check, the served interpreters only ever see a request's
    batch, and the idle service stays small.
    """
    return classifier.Classifier.load(model.path, backend=model.backend.name, threads=threads)


def load_reference(bundle_dir, document, backend=None, threads=1):
    """The bundle's float reference model (checked against the manifest), or None when it has none.

    The forced `backend` runs it when it can; the numpy engine runs int8 models only, so a float
    reference then takes the first installed interpreter that runs float models.
    """
    name = document.file_with_role(manifest.ROLE_FLOAT_REFERENCE)
    if name is None or not (bundle_dir / name).is_file():
        return None
    path = bundle_dir / name
    installed = set(backends.available_backends())
    usable = [candidate for candidate in backends.interpreters_for(path)
              if candidate in installed and candidate not in backends.INT8_ONLY_BACKENDS]
    if not usable:
        return None
    chosen = backend if backend in usable else usable[0]
    return classifier.Classifier.load(path, backend=chosen, threads=threads, check_integrity=True)
