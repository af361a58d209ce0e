"""The three-line API: `Classifier.load(path)`, then `predict(images)` for labels and probabilities.

One straight line: prepared model inputs → quantized → the interpreter → raw outputs →
probabilities → labels. Files are decoded and prepared before this (`edge_runtime.pictures.preparation`).
"""

import os

import numpy as np

from edge_runtime import backends, errors, manifest as manifest_module, preprocessing

DEFAULT_BATCH_SIZE = 256


class Predictions:
    """What a classifier says about N images: raw outputs, probabilities (N, K) and top labels (N,)."""

    __slots__ = ("labels", "probabilities", "raw", "class_names")

    def __init__(self, labels, probabilities, raw=None, class_names=None):
        self.labels = labels
        self.probabilities = probabilities
        self.raw = probabilities if raw is None else raw
        self.class_names = class_names

    def top_k(self, k=3):
        """Return (labels, probabilities), each (N, k), best first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.probabilities, order, axis=1)

    def names(self):
        """The class name of each top label (its index as text when the model has no names)."""
        return [self.class_names[label] if self.class_names else str(label) for label in self.labels]

    def __len__(self):
        return len(self.labels)


class Classifier:
    """An image classifier around one exported model (.tflite or .onnx, float or int8).

    Int8 models take int8 inputs and give int8 outputs; the classifier quantizes and dequantizes
    with the scale and zero point read from the model itself, so callers always deal in floats.
    The input shape is the model's own; class names and image preparation come from the manifest
    beside the model (`manifest`, None when there is none).
    """

    def __init__(self, backend, manifest=None, threads=None):
        self.backend = backend
        self.threads = threads
        self.location = backend.location  # str; `path` is the same as a pathlib.Path
        self.manifest = manifest
        self.input = backend.input
        self.output = backend.output
        self.input_shape = tuple(self.input.shape[1:])
        self._quantized = self.input.scale is not None
        if len(self.input_shape) != 3 or min(self.input_shape) < 1 or len(self.output.shape) != 2:
            raise errors.ModelFileError(
                f"{self.path}: expected one image input (N, H, W, C) and one output (N, classes), "
                f"got {self.input.shape} and {self.output.shape}"
            )
        classes = self.output.shape[1]
        if manifest is not None and classes != manifest.num_classes:
            raise errors.ModelFileError(
                f"{self.path}: the model has {classes} outputs but its manifest names {manifest.num_classes} classes"
            )
        self.class_names = manifest.classes if manifest is not None else tuple(str(i) for i in range(classes))
        file_name = os.path.basename(self.location)
        if manifest is not None and file_name in manifest.files:
            check_precision(self.location, manifest.files[file_name], self.input, self.output)
        # uint8 pictures into an integer model go through lookup tables built by the very functions
        # the general path uses (same values, bit for bit), one numpy call each instead of several.
        self._pixel_table = self._output_table = None
        if self._quantized and self.input.dtype.itemsize == 1:
            self._pixel_table = preprocessing.quantize(
                preprocessing.to_unit_float(np.arange(256, dtype=np.uint8)), self.input.scale, self.input.zero_point,
                self.input.dtype)
        if self.output.scale is not None and self.output.dtype.itemsize == 1:
            every_value = np.arange(256, dtype=np.uint8).view(self.output.dtype)
            table = preprocessing.dequantize(every_value, self.output.scale, self.output.zero_point)
            self._output_table = np.empty(256, np.float32)
            self._output_table[every_value.view(np.uint8)] = table

    @classmethod
    def load(cls, path, backend=None, threads=None, check_integrity=True):
        """Open the model at `path`.

        Takes: the model path; `backend` to force an interpreter (see backends.BACKEND_NAMES);
        `threads` for the interpreter; `check_integrity` to compare the file's sha256 with the
        manifest.json beside it when there is one (a mismatch is refused).
        Raises: ModelFileError, IntegrityError, BackendUnavailableError.
        """
        path = os.fspath(path)
        found = None
        if os.path.isfile(path):
            found = manifest_module.manifest_beside(path)
            if found is not None and check_integrity:
                manifest_module.verify_against_manifest(path, found)
        return cls(backends.open_backend(path, backend=backend, threads=threads), found, threads)

    @property
    def path(self):
        """The model file as a pathlib.Path (see backends.as_path)."""
        return backends.as_path(self.location)

    @property
    def is_quantized(self):
        """True when the model takes quantized (integer) inputs."""
        return self._quantized

    def run_raw(self, model_input):
        """Run float32 (N, H, W, C) inputs; return the model's raw outputs (int8 for int8 models)."""
        if self._quantized:
            model_input = preprocessing.quantize(
                model_input, self.input.scale, self.input.zero_point, self.input.dtype
            )
        return self.backend.run(model_input)

    def probabilities_from_raw(self, raw):
        """Turn raw outputs into float32 probabilities (dequantized for int8 models)."""
        if self._output_table is not None:
            return self._output_table[np.asarray(raw).view(np.uint8)]
        if self.output.scale is not None:
            return preprocessing.dequantize(raw, self.output.scale, self.output.zero_point)
        return np.asarray(raw, dtype=np.float32)

    def predict(self, images, batch_size=DEFAULT_BATCH_SIZE, name="input", progress=None):
        """Classify images that already have the model's input size.

        Takes: uint8 or [0, 1] float arrays shaped (H, W[, C]) or (N, H, W[, C]) as the model takes
        them (prepare picture files with `edge_runtime.pictures.preparation.prepare_files`). `progress`, if
        given, is called with the number of images done after each batch.
        Returns: Predictions. Raises: InputError for a wrong shape, dtype or values.
        """
        if batch_size < 1:
            raise errors.InputError(f"batch size must be at least 1, got {batch_size}")
        images = np.asarray(images)
        if self._pixel_table is not None and images.dtype == np.uint8:
            model_input = self._pixel_table[preprocessing.as_batch(images, self.input_shape, name)]
            run = self.backend.run
        else:
            model_input = preprocessing.to_model_input(images, self.input_shape, name=name)
            run = self.run_raw
        outputs = []
        for start in range(0, len(model_input), batch_size):
            outputs.append(run(model_input[start : start + batch_size]))
            if progress is not None:
                progress(min(start + batch_size, len(model_input)))
        raw = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        probabilities = self.probabilities_from_raw(raw)
        return Predictions(probabilities.argmax(axis=1), probabilities, raw, self.class_names)

    def describe(self):
        """Return the model's path, backend, input/output details and classes as a JSON-ready dict."""
        return {
            "path": str(self.path),
            "format": self.backend.format,
            "backend": self.backend.name,
            "input": self.input.as_dict(),
            "output": self.output.as_dict(),
            "classes": list(self.class_names),
        }


def check_precision(path, entry, input_tensor, output_tensor):
    """Raise ModelFileError when a TFLite model's tensors contradict the precision its manifest entry
    records: an int8 model with float input and output (a float model copied into the int8 role and
    re-hashed), or a float model with integer ones. An int8 ONNX model (QDQ) takes and gives float
    tensors, so ONNX files are not judged by their tensors.
    """
    if backends.model_format(path) != "tflite" or entry.precision is None:
        return
    integer_io = [np.issubdtype(tensor.dtype, np.integer) for tensor in (input_tensor, output_tensor)]
    dtypes = f"{np.dtype(input_tensor.dtype).name} input and {np.dtype(output_tensor.dtype).name} output"
    if entry.precision == "int8" and not any(integer_io):
        raise errors.ModelFileError(f"{path}: the manifest lists it as an int8 model ({entry.role}) but it has "
                                    f"{dtypes} tensors: a float model in the int8 model's place; re-export the bundle")
    if entry.precision == "float32" and any(integer_io):
        raise errors.ModelFileError(f"{path}: the manifest lists it as a float32 model ({entry.role}) but it has "
                                    f"{dtypes} tensors: an integer model in the float model's place; re-export the bundle")
