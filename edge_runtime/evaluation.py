"""The on-device accuracy check: run a model on the bundled test set and compare with the float model."""

import dataclasses
import hashlib
import pathlib

import numpy as np

from edge_runtime import classifier, errors, manifest, preprocessing

TEST_SET_NAME = "mnist_test.npz"
FLOAT_REFERENCE_NAME = "model_f32.tflite"
DEFAULT_TOLERANCE_POINTS = 0.5


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One model's result on the test set, beside the float model's recorded accuracy."""

    model: str
    backend: str
    images: int
    accuracy: float
    float_accuracy: float | None  # the Keras model's, from the manifest
    export_accuracy: float | None  # what the export recorded for this very file
    agreement_with_float: float | None  # top-1 agreement with the float TFLite model, run here
    labels: np.ndarray = dataclasses.field(repr=False)
    raw_outputs: np.ndarray = dataclasses.field(repr=False)

    @property
    def drop_points(self):
        """Accuracy lost against the float model, in percentage points (None without a reference)."""
        return None if self.float_accuracy is None else 100.0 * (self.float_accuracy - self.accuracy)

    @property
    def matches_export(self):
        """True when this device reproduces the accuracy the export measured (None if unrecorded)."""
        return None if self.export_accuracy is None else bool(np.isclose(self.accuracy, self.export_accuracy, rtol=0, atol=1e-9))

    def as_dict(self):
        return {
            "model": self.model,
            "backend": self.backend,
            "images": self.images,
            "accuracy": self.accuracy,
            "float_accuracy": self.float_accuracy,
            "drop_points": self.drop_points,
            "export_accuracy": self.export_accuracy,
            "matches_export": self.matches_export,
            "agreement_with_float": self.agreement_with_float,
            # A fingerprint of every raw output: equal on two machines means bit-identical results.
            "raw_outputs_sha256": hashlib.sha256(np.ascontiguousarray(self.raw_outputs).tobytes()).hexdigest(),
        }


def load_test_set(path):
    """Read the bundled test set (.npz with x_test uint8 (N, 28, 28) and y_test (N,)).

    Raises: InputError naming the file when it is missing or holds something else.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise errors.InputError(f"{path}: no such test set file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["x_test"], archive["y_test"]
    except (OSError, ValueError, KeyError) as error:
        raise errors.InputError(f"{path}: not a test set (.npz with x_test and y_test): {error}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise errors.InputError(f"{path}: expected x_test (N, 28, 28) and y_test (N,), got {images.shape} and {labels.shape}")
    return images, labels.astype(np.int64)


def evaluate(model_path, images, labels, backend=None, threads=None, check_integrity=True,
             float_labels=None, progress=None):
    """Run the model at `model_path` on `images`; return an Evaluation.

    `float_labels`, when given, are the float model's predictions on the same images, for the
    agreement figure. The float accuracy and the export's own figure come from the manifest.
    """
    model = classifier.Classifier.load(model_path, backend=backend, threads=threads,
                                       check_integrity=check_integrity)
    model_input = preprocessing.to_model_input(images, name=str(model_path))
    raw = model.predict_raw(model_input, progress=progress)
    predicted = model.probabilities_from_raw(raw).argmax(axis=1)
    beside = manifest.manifest_beside(model_path)
    float_accuracy = export_accuracy = None
    if beside is not None:
        float_accuracy = beside.get("source_model", {}).get("test_accuracy")
        export_accuracy = beside["files"].get(pathlib.Path(model_path).name, {}).get("test_accuracy")
    return Evaluation(
        model=pathlib.Path(model_path).name,
        backend=model.backend.name,
        images=len(labels),
        accuracy=float(np.mean(predicted == labels)),
        float_accuracy=float_accuracy,
        export_accuracy=export_accuracy,
        agreement_with_float=None if float_labels is None else float(np.mean(predicted == float_labels)),
        labels=predicted,
        raw_outputs=raw,
    )
