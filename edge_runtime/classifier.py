"""The three-line API: `Classifier.load(path)`, then `predict(images)` for labels and probabilities."""

import os
import pathlib

import numpy as np

from edge_runtime import backends, errors, manifest, preprocessing

DEFAULT_BATCH_SIZE = 256


class Predictions:
    """What a classifier says about N images: the top label (N,) and all ten probabilities (N, 10)."""

    __slots__ = ("labels", "probabilities")

    def __init__(self, labels, probabilities):
        self.labels = labels
        self.probabilities = probabilities

    def top_k(self, k=3):
        """Return (labels, probabilities), each (N, k), best first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.probabilities, order, axis=1)

    def __len__(self):
        return len(self.labels)


class Classifier:
    """A digit classifier around one exported model (.tflite or .onnx, float or int8).

    Int8 models take int8 inputs and give int8 outputs; the classifier quantizes and dequantizes
    with the scale and zero point read from the model itself, so callers always deal in floats.
    """

    def __init__(self, backend, manifest_entry=None, threads=None):
        self.backend = backend
        self.threads = threads
        self.path = backend.path
        self.manifest_entry = manifest_entry
        self.input = backend.input
        self.output = backend.output

    @classmethod
    def load(cls, path, backend=None, threads=None, check_integrity=True):
        """Open the model at `path`.

        Takes: the model path; `backend` to force an interpreter (see backends.BACKEND_NAMES);
        `threads` for the interpreter; `check_integrity` to compare the file's sha256 with the
        manifest.json beside it when there is one (a mismatch is refused).
        Raises: ModelFileError, IntegrityError, BackendUnavailableError.
        """
        path = pathlib.Path(path)
        entry = None
        if check_integrity and path.is_file():
            beside = manifest.manifest_beside(path)
            if beside is not None:
                entry = manifest.verify_against_manifest(path, beside)
        return cls(backends.open_backend(path, backend=backend, threads=threads), entry, threads)

    @property
    def is_quantized(self):
        """True when the model takes quantized (integer) inputs."""
        return self.input.scale is not None

    def run_raw(self, model_input):
        """Run float32 (N, 28, 28, 1) inputs; return the model's raw outputs (int8 for int8 models)."""
        if self.is_quantized:
            model_input = preprocessing.quantize(
                model_input, self.input.scale, self.input.zero_point, self.input.dtype
            )
        return self.backend.run(model_input)

    def probabilities_from_raw(self, raw):
        """Turn raw outputs into float32 probabilities (dequantized for int8 models)."""
        if self.output.scale is not None:
            return preprocessing.dequantize(raw, self.output.scale, self.output.zero_point)
        return np.asarray(raw, dtype=np.float32)

    def predict(self, images, batch_size=DEFAULT_BATCH_SIZE, name="input", progress=None):
        """Classify images.

        Takes: uint8 or [0, 1] float images shaped (28, 28), (N, 28, 28) or (N, 28, 28, 1), or
        image file paths (one, or a list), which are read and made MNIST-like by
        `edge_runtime.images`. `progress`, if given, is called with the number of images done
        after each batch.
        Returns: Predictions. Raises: InputError for a wrong shape, dtype or values.
        """
        if isinstance(images, (str, os.PathLike)) or (
            isinstance(images, (list, tuple)) and images and all(isinstance(item, (str, os.PathLike)) for item in images)
        ):
            from edge_runtime import images as image_files

            images, _ = image_files.load_images([images] if isinstance(images, (str, os.PathLike)) else images)
        model_input = preprocessing.to_model_input(images, name=name)
        raw = self.predict_raw(model_input, batch_size, progress)
        probabilities = self.probabilities_from_raw(raw)
        return Predictions(labels=probabilities.argmax(axis=1), probabilities=probabilities)

    def predict_raw(self, model_input, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """Run float32 NHWC inputs in batches; return the concatenated raw outputs."""
        if batch_size < 1:
            raise errors.InputError(f"batch size must be at least 1, got {batch_size}")
        outputs = []
        for start in range(0, len(model_input), batch_size):
            outputs.append(self.run_raw(model_input[start : start + batch_size]))
            if progress is not None:
                progress(min(start + batch_size, len(model_input)))
        return np.concatenate(outputs)

    def describe(self):
        """Return the model's path, backend and input/output details as a JSON-ready dict."""
        return {
            "path": str(self.path),
            "format": self.backend.format,
            "backend": self.backend.name,
            "input": self.input.as_dict(),
            "output": self.output.as_dict(),
        }
