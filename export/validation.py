"""Check each export against the Keras model on the full test set, with explicit tolerances.

The exported file is run through `edge_runtime` — the same preprocessing, quantization and
interpreter code the device uses — so a pass here means the device path was checked, not a copy.
"""

import dataclasses
import math

import numpy as np

from edge_runtime import backends, classifier, drift, evaluation


class ExportValidationError(Exception):
    """An exported model disagrees with the Keras model by more than the tolerance."""


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """How far an export may stray from the Keras model it came from."""

    float_min_agreement: float = 0.999  # share of test images with the same top-1 label
    float_max_probability_difference: float = 1e-4  # largest |p_export - p_keras| over all outputs
    int8_max_accuracy_drop_points: float = 0.5  # percentage points of test accuracy

    def __post_init__(self):
        if not 0.0 <= self.float_min_agreement <= 1.0:
            raise ValueError(f"float agreement must be in [0, 1], got {self.float_min_agreement}")
        for name in ("float_max_probability_difference", "int8_max_accuracy_drop_points"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number >= 0, got {value}")


def measure(model_path, test_input, test_labels, reference_probabilities, backend=None, top1_edges=drift.DEFAULT_EDGES):
    """Run the model at `model_path` on the test set; return its accuracy and agreement metrics.

    Takes: float32 (N, H, W, C) inputs, (N,) labels, the Keras model's (N, K) probabilities, and the
    bin edges of the top-1 probability histogram (what serve's label-free drift compares with).
    Returns: a dict with accuracy, agreement with the reference, largest probability difference,
    the top-1 histogram's counts, and the backend that ran it.
    """
    # Opened on its own: the manifest beside it (if any) is the previous export's, not this file's.
    model = classifier.Classifier(backends.open_backend(model_path, backend=backend))
    predictions = model.predict(test_input, name=str(model_path))
    reference_labels = reference_probabilities.argmax(axis=1)
    return {
        "test_accuracy": float(np.mean(predictions.labels == test_labels)),
        "agreement_with_keras": float(np.mean(predictions.labels == reference_labels)),
        "max_probability_difference": float(np.abs(predictions.probabilities - reference_probabilities).max()),
        "top1_counts": drift.top1_counts(predictions.probabilities, top1_edges),
        "validated_with": model.backend.name,
        "input": model.input.as_dict(),
        "output": model.output.as_dict(),
    }


def check(file_name, metrics, reference_accuracy, quantized, tolerances):
    """Raise ExportValidationError, naming the file and the shortfall, when a tolerance is exceeded."""
    if quantized:
        failure = evaluation.accuracy_drop_failure(file_name, metrics["test_accuracy"], reference_accuracy,
                                                   tolerances.int8_max_accuracy_drop_points)
        if failure:
            raise ExportValidationError(failure)
        return
    if metrics["agreement_with_keras"] < tolerances.float_min_agreement:
        raise ExportValidationError(
            f"{file_name}: top-1 agrees with Keras on {100 * metrics['agreement_with_keras']:.2f}% of test images "
            f"(needs {100 * tolerances.float_min_agreement:.2f}%)"
        )
    if metrics["max_probability_difference"] > tolerances.float_max_probability_difference:
        raise ExportValidationError(
            f"{file_name}: probabilities differ from Keras by up to {metrics['max_probability_difference']:.2e} "
            f"(tolerance {tolerances.float_max_probability_difference:.0e})"
        )
