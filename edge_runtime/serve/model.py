"""The model behind the service: load it from a bundle, classify uploads and pixels, check it at start-up.

This is the one module of `edge_runtime.serve` that calls into the model-running rest of
`edge_runtime` (bundle, classifier, pictures, the bundle check `eval` runs), so that a change of
their API is a change here alone. It also holds the float reference model the live checks compare
with (`classify_float`).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from edge_runtime import bundle, errors, manifest, preprocessing, self_check as bundle_check
from edge_runtime.pictures import preparation


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One request's images as the model takes them, float32 (N, H, W, C) in [0, 1], and their names."""

    model_input: np.ndarray
    names: list
    upload: bytes = b""  # the file as it was uploaded (empty for JSON pixels), kept for --collect


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the model said about prepared images: its Predictions, and seconds spent in the model."""

    predictions: object  # classifier.Predictions
    seconds: float

    @property
    def probabilities(self):
        return self.predictions.probabilities


def picture_of(model_input):
    """A model input (H, W, C) or a batch of them as people see it: uint8, (H, W) when grey, (H, W, 3) in colour."""
    pixels = np.rint(np.clip(model_input, 0.0, 1.0) * 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


class ServedModel:
    """One exported model of a bundle, shared by the server's worker threads.

    The interpreter is not safe to call from two threads at once, so calls into it hold a lock;
    image decoding and preparation, the expensive part of a request, happen outside it. One
    interpreter per worker thread was measured too: 16 clients, one core, it answered 15-25%
    fewer requests per second (the model is ~2% of a request's time; more interpreters only add
    memory and cache misses), so one interpreter and a lock it is.
    """

    def __init__(self, bundle_dir, model, document, reference=None, reference_note=None, manifest_sha256=None):
        self.bundle_dir = bundle_dir
        self.model = model
        self.document = document
        self.reference = reference  # the float reference Classifier, or None when the bundle has none
        self.reference_note = reference_note  # why there is none though the bundle has one, or None
        self.entry = document.files[model.path.name].details
        self.manifest_sha256 = manifest_sha256  # the export's identity: what the fleet compares as "version"
        self.preparation = preparation.for_classifier(model)
        self._lock = threading.Lock()
        self._reference_lock = threading.Lock()

    @classmethod
    def load(cls, target, backend=None, threads=1):
        """Open the bundle directory `target` (its int8 model, by its manifest role) or the model file
        `target` in one, checked against the bundle's manifest, with the bundle's float reference.

        Raises: ModelFileError (no such directory or model, no manifest, the float reference listed
        but missing), IntegrityError, BackendUnavailableError.
        """
        from edge_runtime.classifier import Classifier

        model = Classifier.load(bundle.model_path(target, backend), backend=backend, threads=threads,
                                check_integrity=True)
        if model.manifest is None:
            raise errors.ModelFileError(f"{model.path}: no manifest beside it; serve needs the whole bundle")
        directory = model.path.parent
        reference, note = bundle_check.load_reference(directory, model.manifest, backend, threads)
        return cls(directory, model, model.manifest, reference, note,
                   manifest_sha256=manifest.sha256_of(directory / manifest.MANIFEST_NAME))

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
        model_input, names = preparation.prepare_files([data], self.preparation, names=[name])
        return Prepared(model_input=model_input, names=names, upload=bytes(data))

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
            raise errors.InputError(f"{name}: pixels must all be numbers (integers 0..255 or fractions 0..1), "
                                    "with no text, true/false or null among them")
        if np.issubdtype(array.dtype, np.integer):
            if array.size and (array.min() < 0 or array.max() > 255):
                raise errors.InputError(f"{name}: integer pixels must be 0..255, found {array.min()}..{array.max()}")
            array = array.astype(np.uint8)
        model_input = preprocessing.to_model_input(array, self.model.input_shape, name=name)
        single = array.ndim == len(self.model.input_shape) - (1 if self.model.input_shape[2] == 1 else 0)
        names = [name] if single else [f"{name}[{index}]" for index in range(len(model_input))]
        return Prepared(model_input=model_input, names=names)

    @property
    def reference_name(self):
        return None if self.reference is None else self.reference.path.name

    def classify_float(self, model_input):
        """Run the float reference on model inputs (as in Prepared.model_input); return an Outcome.

        Its own lock: the float model and the served one can run at the same time.
        Raises: InputError when the bundle has no float reference (callers check `reference` first).
        """
        if self.reference is None:
            raise errors.InputError(f"{self.bundle_dir}: the bundle has no float reference model")
        with self._reference_lock:
            started = time.perf_counter()
            predictions = self.reference.predict(model_input)
            seconds = time.perf_counter() - started
        return Outcome(predictions=predictions, seconds=seconds)

    def classify(self, prepared):
        """Run the model on prepared images; return an Outcome."""
        with self._lock:
            started = time.perf_counter()
            predictions = self.model.predict(prepared.model_input, name=prepared.names[0])
            seconds = time.perf_counter() - started
        return Outcome(predictions=predictions, seconds=seconds)

    def self_check(self, image_count=None, tolerance_points=None, threads=1):
        """The bundle check `eval` runs, on this model: its test set (the first `image_count` images;
        None: all) against the float reference, with `tolerance_points` (None: the manifest's).

        It runs on copies of the interpreters (`checking_copy`, with `threads`), before the service
        takes requests.
        Returns: self_check.BundleCheck. Raises: ModelFileError, InputError or IntegrityError when
        the bundle's test set is missing or not the one the manifest describes.
        """
        test = bundle_check.images_to_check(self.bundle_dir, self.document, image_count=image_count)
        reference = None if self.reference is None else checking_copy(self.reference, threads)
        return bundle_check.check([checking_copy(self.model, threads)], reference, test, self.document,
                                  tolerance_points)


def checking_copy(model, threads):
    """A second Classifier of the same file and backend, for the self-check alone.

    The check runs batches of hundreds of images, and an interpreter's tensor memory grows to fit
    the largest batch it has seen and is not given back (about 40 MiB for the float model here).
    On copies that are dropped after the check, the served interpreters only ever see a request's
    batch, and the idle service stays small.
    """
    from edge_runtime.classifier import Classifier

    return Classifier.load(model.path, backend=model.backend.name, threads=threads)
