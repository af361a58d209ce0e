"""The accuracy check: run a model on a labelled test set, and decide whether int8 lost too much.

`accuracy_drop_failure` is the one place that decides "did this model lose more than the tolerance
against its float reference?". Export validation, compare's gate, `eval` on the device and the
service's start-up self-check all call it, so they agree and speak with one message.
`interval_drop_failure` is the stricter rule the export's recovery ladder chooses by, on data the
test set never sees: the whole exact paired interval on the drop must be within the tolerance.
"""

import dataclasses
import hashlib
import math
import pathlib
import typing
import zipfile

import numpy as np

from edge_runtime import errors, manifest as manifest_module


def check_tolerance(tolerance_points, name="tolerance"):
    """Return `tolerance_points` as a float; raise InputError unless it is finite and >= 0."""
    try:
        value = float(tolerance_points)
    except (TypeError, ValueError):
        raise errors.InputError(f"{name} must be a number of percentage points, got {tolerance_points!r}") from None
    if not math.isfinite(value) or value < 0:
        raise errors.InputError(f"{name} must be a finite number of points >= 0, got {tolerance_points!r}")
    return value


def accuracy_drop_failure(model_name, accuracy, float_accuracy, tolerance_points):
    """Return None when `accuracy` is at most `tolerance_points` below `float_accuracy`, else the message.

    Takes accuracies as fractions in [0, 1] and the tolerance in percentage points.
    """
    drop_points = 100.0 * (float_accuracy - accuracy)
    if drop_points <= tolerance_points:
        return None
    return (f"{model_name}: accuracy {100 * accuracy:.2f}% is {drop_points:.2f} points below the float "
            f"model's {100 * float_accuracy:.2f}% (tolerance {tolerance_points:.2f})")


def drop_interval(comparison):
    """(low, high) of the accuracy drop in points, from statistics.paired_comparison(float, candidate).

    The comparison's interval is on candidate minus reference; the drop is its negative.
    """
    return -comparison["ci_high_points"], -comparison["ci_low_points"]


def interval_drop_failure(model_name, comparison, tolerance_points):
    """Return None when the upper end of the exact paired interval on the drop is within
    `tolerance_points`, else the message (the recovery ladder's pass rule).

    Takes the dict of statistics.paired_comparison(reference_correct, candidate_correct).
    """
    _, drop_high = drop_interval(comparison)
    if drop_high <= tolerance_points:
        return None
    return (f"{model_name}: accuracy {100 * comparison['candidate_accuracy']:.2f}% is "
            f"{-comparison['difference_points']:.2f} points below the float model's "
            f"{100 * comparison['reference_accuracy']:.2f}% on {comparison['n']} images, and up to "
            f"{drop_high:.2f} by the exact 95% paired interval (tolerance {tolerance_points:.2f})")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One model's result on the test set, beside the float model's recorded accuracy."""

    model: str
    backend: str
    images: int
    accuracy: float
    float_accuracy: typing.Optional[float]  # the source (Keras) model's, from the manifest
    export_accuracy: typing.Optional[float]  # what the export recorded for this very file
    agreement_with_float: typing.Optional[float]  # top-1 agreement with the float reference, run here
    labels: np.ndarray = dataclasses.field(repr=False)
    raw_outputs: np.ndarray = dataclasses.field(repr=False)
    per_class_accuracy: typing.Tuple[typing.Optional[float], ...] = ()

    @property
    def drop_points(self):
        """Accuracy lost against the float model, in percentage points (None without a reference)."""
        return None if self.float_accuracy is None else 100.0 * (self.float_accuracy - self.accuracy)

    @property
    def matches_export(self):
        """True when this device reproduces the accuracy the export measured (None if unrecorded)."""
        if self.export_accuracy is None or self.images != self.recorded_images:
            return None
        return bool(np.isclose(self.accuracy, self.export_accuracy, rtol=0, atol=1e-9))

    recorded_images: typing.Optional[int] = None  # test images the export measured on

    def as_dict(self, class_names=None):
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
            "per_class_accuracy": {
                (class_names[index] if class_names else str(index)): value
                for index, value in enumerate(self.per_class_accuracy)
            },
            # A fingerprint of every raw output: equal on two machines means bit-identical results.
            "raw_outputs_sha256": hashlib.sha256(np.ascontiguousarray(self.raw_outputs).tobytes()).hexdigest(),
        }


def load_test_set(path, input_shape=None, num_classes=None, manifest=None):
    """Read a test set .npz: x_test uint8 (N, H, W[, C]) and y_test integer class indices (N,).

    When `manifest` is given, the file's sha256 and image count must match its entry (a test set
    cut down or relabelled after export is refused). `input_shape` (H, W, C) and `num_classes`, when
    given, are checked too. Raises: InputError or IntegrityError naming the file.
    """
    path = pathlib.Path(path)
    if manifest is not None:
        entry = manifest_module.verify_against_manifest(path, manifest)
        if entry.role != manifest_module.ROLE_TEST_SET:
            raise errors.InputError(f"{path}: the manifest lists it as {entry.role}, not as the test set")
    if not path.is_file():
        raise errors.InputError(f"{path}: no such test set file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ("x_test", "y_test") if name not in archive.files]
            if missing:
                raise errors.InputError(f"{path}: not a test set: no '{missing[0]}' array (needs x_test and y_test)")
            images, labels = archive["x_test"], archive["y_test"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise errors.InputError(f"{path}: not a readable test set .npz: {error}") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.shape != (len(images),) or not len(images):
        raise errors.InputError(
            f"{path}: expected x_test uint8 (N, H, W[, C]) and y_test (N,), got {images.dtype} {images.shape} "
            f"and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise errors.InputError(f"{path}: y_test must hold integer class indices, got {labels.dtype}")
    if input_shape is not None:
        shape = tuple(images.shape[1:]) + ((1,) if images.ndim == 3 else ())
        if shape != tuple(input_shape):
            raise errors.InputError(f"{path}: images are {shape} but the model takes {tuple(input_shape)}")
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise errors.InputError(
            f"{path}: y_test holds labels {int(labels.min())}..{int(labels.max())}, outside the model's "
            f"{num_classes} classes 0..{num_classes - 1}"
        )
    if manifest is not None and len(labels) != manifest.files[path.name].images:
        raise errors.IntegrityError(
            f"{path}: holds {len(labels)} images, the manifest says {manifest.files[path.name].images}"
        )
    return images, labels.astype(np.int64)


def per_class_accuracy(true_labels, predicted_labels, num_classes):
    """Accuracy within each class (None for a class with no test images)."""
    values = []
    for label in range(num_classes):
        members = true_labels == label
        values.append(float(np.mean(predicted_labels[members] == label)) if members.any() else None)
    return tuple(values)


# Test images go through the model a chunk at a time: converted to float32 all at once they would
# take 4 bytes a pixel (31 MB for MNIST's 10,000) on top of the uint8 set, which a Pi Zero (512 MB)
# feels. A multiple of the classifier's batch size, so the interpreter sees the same batches.
EVALUATION_CHUNK = 1024


def predict_in_chunks(model, images, progress=None):
    """model.predict over a batch of images, EVALUATION_CHUNK at a time; returns one Predictions."""
    parts = []
    for start in range(0, len(images), EVALUATION_CHUNK):
        report = None if progress is None else (lambda done, start=start: progress(start + done))
        parts.append(model.predict(images[start : start + EVALUATION_CHUNK], progress=report))
    if len(parts) == 1:
        return parts[0]
    return type(parts[0])(np.concatenate([part.labels for part in parts]),
                          np.concatenate([part.probabilities for part in parts]),
                          np.concatenate([part.raw for part in parts]), parts[0].class_names)


def evaluate(model, images, labels, manifest=None, float_labels=None, progress=None):
    """Run `model` (a loaded Classifier) on `images`; return an Evaluation.

    `float_labels`, when given, are the float reference's predictions on the same images, for the
    agreement figure. The float accuracy and the export's own figure come from `manifest`.
    """
    predictions = predict_in_chunks(model, images, progress)
    name = pathlib.Path(model.path).name
    entry = None if manifest is None else manifest.files.get(name)
    test_entry = None if manifest is None else manifest.files.get(manifest.file_with_role(manifest_module.ROLE_TEST_SET))
    return Evaluation(
        model=name,
        backend=model.backend.name,
        images=len(labels),
        accuracy=float(np.mean(predictions.labels == labels)),
        float_accuracy=None if manifest is None else manifest.float_accuracy,
        export_accuracy=None if entry is None else entry.test_accuracy,
        agreement_with_float=None if float_labels is None else float(np.mean(predictions.labels == float_labels)),
        labels=predictions.labels,
        raw_outputs=predictions.raw,
        per_class_accuracy=per_class_accuracy(labels, predictions.labels, predictions.probabilities.shape[1]),
        recorded_images=None if test_entry is None else test_entry.images,
    )


def reference_failures(manifest, reference):
    """Check the manifest's float figures against the float reference run here on its whole test set.

    An int8 model is judged against the float accuracy the manifest records, so that figure must
    be the one the files give: the reference must reproduce its own recorded accuracy, and the
    source model's accuracy must agree with it as closely as export's float tolerance allowed.
    Both within that same margin, which leaves room for float rounding on another CPU.
    Returns one message per broken figure (an edited manifest, or a changed reference file).
    """
    margin = 1.0 - manifest.float_min_agreement
    recorded = manifest.files[reference.model].test_accuracy
    messages = []
    if abs(reference.accuracy - recorded) > margin + 1e-12:
        messages.append(f"{reference.model}: accuracy {100 * reference.accuracy:.2f}% here is not the "
                        f"{100 * recorded:.2f}% the manifest records; the manifest or the file was changed")
    if abs(manifest.float_accuracy - recorded) > margin + 1e-12:
        messages.append(f"{manifest.path}: the float model's recorded {100 * manifest.float_accuracy:.2f}% and its "
                        f"float reference's {100 * recorded:.2f}% cannot both be right; the manifest was changed")
    return messages


def failures(results, tolerance_points, strict=False):
    """Return one message per model that fails the check (`eval`'s verdict and the service's gate)."""
    messages = []
    for result in results:
        if result.float_accuracy is None:
            messages.append(f"{result.model}: no float accuracy to compare with (no manifest beside it)")
            continue
        failure = accuracy_drop_failure(result.model, result.accuracy, result.float_accuracy, tolerance_points)
        if failure:
            messages.append(failure)
        if strict and result.matches_export is not True:
            recorded = "no figure" if result.export_accuracy is None else f"{100 * result.export_accuracy:.2f}%"
            messages.append(f"{result.model}: accuracy {100 * result.accuracy:.2f}% on {result.images} images "
                            f"does not reproduce the export's ({recorded} on {result.recorded_images} images)")
    return messages
