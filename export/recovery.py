"""The recovery ladder: when plain int8 loses too much, try remedies in order of cost and keep the first that passes.

Steps, cheapest first, for the TFLite and the ONNX int8 model alike:
1. int8 as the export always made it (the configured calibration);
2. calibration: the same with more calibration images;
3. sensitivity: the weighted layers ranked, worst first (no candidate): TFLite by
   QuantizationDebugger's per-layer error, ONNX by the validation accuracy with each layer alone
   kept in float;
4. float fallback: the worst 1, 2, … layers kept in float, the rest int8 (precision "mixed";
   TFLite denylisted_nodes, ONNX nodes_to_exclude);
5. 16-bit activations for the whole model: TFLite 16x8, ONNX QDQ with int16 activations.

Every choice is made on a validation split held out of the training data, never on the test set:
a candidate passes when the upper end of the exact paired interval on its accuracy drop against
the Keras model (edge_runtime.evaluation.interval_drop_failure) is within the tolerance. The test
set is then used once, by the export's usual gate on the chosen file. Each candidate's test
figures are recorded beside its validation figures for the report; they decide nothing.
"""

import dataclasses
import pathlib
import tempfile

import numpy as np

from edge_runtime import backends, classifier, evaluation, statistics
from export import calibration, to_tflite


class RecoveryFailed(ValueError):
    """No step of the ladder gave a model within the tolerance."""


@dataclasses.dataclass(frozen=True)
class RecoverySettings:
    """How the ladder searches; `python -m export` flags map onto these fields."""

    enabled: bool = True
    validation_size: int = 5000  # images held out of the training data for every choice
    validation_seed: int = 1
    larger_calibration_size: int = 2000
    max_float_layers: int = 2
    debug_images: int = 200  # what QuantizationDebugger measures the layers on (training images)

    def __post_init__(self):
        for name in ("validation_size", "larger_calibration_size", "debug_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.max_float_layers < 0:
            raise ValueError(f"max float layers must be >= 0, got {self.max_float_layers}")


@dataclasses.dataclass
class Candidate:
    """One quantized model the ladder made, with what it was measured to do."""

    step: str
    precision: str  # "int8", "mixed" or "16x8"
    content: bytes
    calibration_images: int
    float_layers: tuple = ()
    validation: dict = None
    test: dict = None
    failure: str = None

    @property
    def passed(self):
        return self.failure is None

    @property
    def drop_high(self):
        return evaluation.drop_interval(self.validation)[1]

    def record(self):
        """The manifest's record of this step (JSON-ready)."""
        low, high = evaluation.drop_interval(self.validation)
        entry = {
            "step": self.step,
            "precision": self.precision,
            "calibration_images": self.calibration_images,
            "float_layers": list(self.float_layers),
            "bytes": len(self.content),
            "validation": {
                "accuracy": self.validation["candidate_accuracy"],
                "drop_points": -self.validation["difference_points"],
                "drop_interval_points": [low, high],
                "only_float_right": self.validation["only_reference_right"],
                "only_candidate_right": self.validation["only_candidate_right"],
            },
            "passed": self.passed,
        }
        if self.test is not None:
            entry["test"] = {"accuracy": self.test["candidate_accuracy"], "drop_points": -self.test["difference_points"]}
        return entry


@dataclasses.dataclass
class Judge:
    """Measures candidates: on the validation split (for the choice) and the test set (for the record)."""

    validation_input: np.ndarray
    validation_labels: np.ndarray
    validation_reference_correct: np.ndarray
    test_input: np.ndarray
    test_labels: np.ndarray
    test_reference_correct: np.ndarray
    tolerance_points: float
    directory: pathlib.Path

    def correct(self, content, images, labels, suffix):
        path = self.directory / f"candidate{suffix}"
        path.write_bytes(content)
        model = classifier.Classifier(backends.open_backend(path))
        return model.predict(images, name="candidate").labels == labels

    def validation_accuracy(self, content, suffix):
        """Accuracy on the validation split alone (for rankings by measurement)."""
        return float(np.mean(self.correct(content, self.validation_input, self.validation_labels, suffix)))

    def measure(self, candidate, suffix):
        candidate.validation = statistics.paired_comparison(
            self.validation_reference_correct, self.correct(candidate.content, self.validation_input,
                                                            self.validation_labels, suffix))
        candidate.test = statistics.paired_comparison(
            self.test_reference_correct, self.correct(candidate.content, self.test_input, self.test_labels, suffix))
        candidate.failure = evaluation.interval_drop_failure(candidate_name(candidate), candidate.validation,
                                                             self.tolerance_points)
        low, high = evaluation.drop_interval(candidate.validation)
        print(f"  {candidate_name(candidate):<34} validation {100 * candidate.validation['candidate_accuracy']:.2f}% "
              f"drop {-candidate.validation['difference_points']:+.2f} [{low:+.2f}, {high:+.2f}]  "
              f"test {100 * candidate.test['candidate_accuracy']:.2f}%  {'pass' if candidate.passed else 'no'}")
        return candidate


def candidate_name(candidate):
    if candidate.float_layers:
        return f"{candidate.step} ({len(candidate.float_layers)} in float)"
    return f"{candidate.step} ({candidate.calibration_images} calibration images)"


def validation_split(train_labels, size, seed, pool, exclude):
    """Stratified, seeded indices of `size` validation images from `pool` (indices), none in `exclude`;
    all of the pool's when it holds fewer (a small dataset), which the manifest then records.

    Raises: ValueError when the pool holds no image outside `exclude`.
    """
    pool = np.setdiff1d(np.asarray(pool), np.asarray(exclude))
    if not len(pool):
        raise ValueError("no training images are left for the validation split once calibration has its own")
    if size >= len(pool):
        return pool
    return pool[calibration.stratified_indices(np.asarray(train_labels)[pool], size, seed)]


class TFLiteMaker:
    """Makes the TFLite candidates: int8 (convert_int8), mixed (quantize_calibrated), 16x8."""

    format = "TFLite"
    suffix = ".tflite"
    precision_16 = "16x8"

    def __init__(self, keras_model):
        self.keras_model = keras_model

    def int8(self, images):
        return to_tflite.convert_int8(self.keras_model, images)

    def with_float_layers(self, images, rows):
        return to_tflite.quantize_calibrated(to_tflite.calibrate(self.keras_model, images),
                                             [row["tensor"] for row in rows])

    def float_layer_names(self, rows):
        return tuple(row["tensor"] for row in rows)

    def sixteen_bit(self, images):
        return to_tflite.convert_16x8(self.keras_model, images)


def run_ladder(maker, calibration_for, base_calibration_size, settings, judge, rank):
    """Climb the ladder for one format; return (the chosen Candidate, the manifest's record of the climb).

    Takes: a maker (TFLiteMaker, or export.to_onnx's), `calibration_for(count)` returning that many
    stratified calibration images, the configured calibration size, the RecoverySettings, a Judge,
    and `rank(images)` giving the weighted layers worst first (sensitivity.rank_layers' rows).
    Raises: RecoveryFailed naming the best candidate and its drop when no step passes.
    """
    tried = []

    def attempt(candidate):
        tried.append(judge.measure(candidate, maker.suffix))
        return candidate.passed

    base_images = calibration_for(base_calibration_size)
    if attempt(Candidate("int8", "int8", maker.int8(base_images), base_calibration_size)) or not settings.enabled:
        return tried[-1], climb_record(tried, [])
    print(f"  {maker.format} int8 misses the tolerance on the validation split; trying the remedies:")
    larger = max(settings.larger_calibration_size, base_calibration_size)
    best_images = base_images
    if larger > base_calibration_size:
        larger_images = calibration_for(larger)
        if attempt(Candidate("calibration", "int8", maker.int8(larger_images), larger)):
            return tried[-1], climb_record(tried, [])
        if tried[-1].drop_high < tried[0].drop_high:
            best_images = larger_images
    calibration_size = len(best_images)
    ranking = rank(best_images)
    for count in range(1, min(settings.max_float_layers, len(ranking)) + 1):
        content = maker.with_float_layers(best_images, ranking[:count])
        if attempt(Candidate("float-fallback", "mixed", content, calibration_size,
                             maker.float_layer_names(ranking[:count]))):
            return tried[-1], climb_record(tried, ranking)
    if attempt(Candidate("16x8", maker.precision_16, maker.sixteen_bit(best_images), calibration_size)):
        return tried[-1], climb_record(tried, ranking)
    best = min(tried, key=lambda candidate: candidate.drop_high)
    low, high = evaluation.drop_interval(best.validation)
    raise RecoveryFailed(
        f"no quantized {maker.format} model is within {judge.tolerance_points:.2f} points of the float model: "
        f"the best, {candidate_name(best)}, drops {-best.validation['difference_points']:.2f} points on the "
        f"validation split (exact 95% interval {low:.2f} to {high:.2f})")


def climb_record(tried, ranking):
    """The manifest's `recovery.steps` and `recovery.sensitivity` for the candidates `tried`."""
    return {
        "steps": [candidate.record() for candidate in tried],
        "sensitivity": [{key: value for key, value in row.items() if key not in ("mean_error", "max_abs_error", "scale")}
                        for row in ranking],
    }


def temporary_directory():
    return tempfile.TemporaryDirectory(prefix="recovery-")
