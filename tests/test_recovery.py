"""The recovery ladder: its pass rule, its validation split, the manifest's record, and the numpy engine on
what it picks (16x8, int8 with layers in float), against LiteRT's reference kernels."""

import json

import numpy as np
import pytest

from edge_runtime import errors, evaluation, manifest, statistics
from export import recovery
from tests.conftest import run_cli


def comparison(only_float_right, only_candidate_right, both_right=4000, both_wrong=100):
    return statistics.paired_comparison_from_counts(both_right, only_float_right, only_candidate_right, both_wrong)


def test_the_interval_rule_refuses_a_drop_whose_point_estimate_is_within_the_tolerance():
    # 22 − 2 = 20 of 4,122 images: a 0.49-point drop, under 0.5, but the interval reaches past it.
    figures = comparison(22, 2, both_right=4000, both_wrong=98)
    assert 0.45 < -figures["difference_points"] < 0.5
    assert evaluation.accuracy_drop_failure("m", figures["candidate_accuracy"], figures["reference_accuracy"], 0.5) is None
    low, high = evaluation.drop_interval(figures)
    assert low < -figures["difference_points"] < high and high > 0.5
    message = evaluation.interval_drop_failure("model_int8.tflite", figures, 0.5)
    assert message.startswith("model_int8.tflite: accuracy ") and f"up to {high:.2f}" in message


def test_the_interval_rule_passes_a_model_that_agrees_with_float():
    figures = comparison(3, 4)
    assert evaluation.interval_drop_failure("m", figures, 0.5) is None
    low, high = evaluation.drop_interval(figures)
    assert low < 0 < high < 0.5


def test_the_validation_split_is_stratified_seeded_and_held_apart():
    labels = np.repeat(np.arange(10), 600)
    pool = np.arange(3000, 6000)
    exclude = np.arange(3000, 3100)
    chosen = recovery.validation_split(labels, 1000, 1, pool, exclude)
    assert len(chosen) == len(set(chosen)) == 1000
    assert set(chosen) <= set(range(3100, 6000))
    counts = np.bincount(labels[chosen], minlength=10)
    assert counts[counts > 0].max() - counts[counts > 0].min() <= 1
    assert np.array_equal(chosen, recovery.validation_split(labels, 1000, 1, pool, exclude))
    assert not np.array_equal(chosen, recovery.validation_split(labels, 1000, 2, pool, exclude))
    assert sorted(recovery.validation_split(labels, 5000, 1, pool, exclude)) == list(range(3100, 6000))
    with pytest.raises(ValueError, match="no training images are left for the validation split"):
        recovery.validation_split(labels, 10, 1, exclude, exclude)


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="validation size must be at least 1"):
        recovery.RecoverySettings(validation_size=0)
    with pytest.raises(ValueError, match="max float layers must be >= 0"):
        recovery.RecoverySettings(max_float_layers=-1)


def recorded_manifest(untrained_export, **changes):
    document = json.loads((untrained_export / manifest.MANIFEST_NAME).read_text())
    document.update(changes)
    return document


def test_the_manifest_reads_a_recovery_record_and_the_new_precisions(untrained_export):
    document = recorded_manifest(untrained_export)
    assert set(document["recovery"]["models"]) == {"model_int8.tflite", "model_int8.onnx"}
    record = document["recovery"]["models"]["model_int8.tflite"]
    assert record["chosen"] == "int8" and record["precision"] == "int8" and record["float_layers"] == []
    step = record["steps"][0]
    assert step["step"] == "int8" and step["passed"] is True and len(step["validation"]["drop_interval_points"]) == 2
    document["files"]["model_int8.tflite"]["precision"] = "16x8"
    record.update(chosen="16x8", precision="16x8")
    parsed = manifest.Manifest.parse(document, source="m.json")
    assert parsed.files["model_int8.tflite"].precision == "16x8"
    assert parsed.recovery["models"]["model_int8.tflite"]["chosen"] == "16x8"
    record.update(chosen="bigger-model")
    with pytest.raises(errors.ModelFileError,
                       match=r"m.json: field 'recovery.models.model_int8.tflite.chosen' must be one of int8, calibration"):
        manifest.Manifest.parse(document, source="m.json")
    record.update(chosen="int8", steps=[{"step": "int8", "passed": "yes"}])
    with pytest.raises(errors.ModelFileError,
                       match=r"field 'recovery.models.model_int8.tflite.steps\[0\].passed' must be true or false"):
        manifest.Manifest.parse(document, source="m.json")
