"""Export building blocks that need no trained model: calibration draw, tolerance checks, manifest."""

import numpy as np
import pytest

from edge_runtime import manifest as runtime_manifest
from export import calibration, manifest, validation
from tests.conftest import require_tensorflow


def test_calibration_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    indices = calibration.stratified_indices(labels, 305, seed=3)
    counts = np.bincount(labels[indices], minlength=10)
    assert len(set(indices.tolist())) == 305
    assert counts.min() == 30 and counts.max() == 31 and counts.sum() == 305
    assert np.array_equal(indices, calibration.stratified_indices(labels, 305, seed=3))
    assert not np.array_equal(indices, calibration.stratified_indices(labels, 305, seed=4))


def test_calibration_size_out_of_range_is_refused():
    with pytest.raises(ValueError, match="between 1 and 10"):
        calibration.stratified_indices(np.arange(10), 11, seed=0)


def test_calibration_images_are_float_nhwc_from_training_pixels():
    images = np.full((20, 28, 28), 255, np.uint8)
    batch = calibration.calibration_images(images, np.arange(20) % 10, 10, seed=0, input_shape=(28, 28, 1))
    assert batch.shape == (10, 28, 28, 1) and batch.dtype == np.float32 and batch.max() == 1.0


TOLERANCES = validation.Tolerances()


def metrics(accuracy, agreement=1.0, difference=0.0):
    return {"test_accuracy": accuracy, "agreement_with_keras": agreement, "max_probability_difference": difference}


def test_int8_drop_within_tolerance_passes_and_beyond_fails_naming_file_and_amount():
    validation.check("model_int8.tflite", metrics(0.9815), 0.9864, quantized=True, tolerances=TOLERANCES)
    with pytest.raises(validation.ExportValidationError,
                       match=r"^model_int8.onnx: accuracy 98.00% is 0.64 points below the float model's 98.64% \(tolerance 0.50\)$"):
        validation.check("model_int8.onnx", metrics(0.98), 0.9864, quantized=True, tolerances=TOLERANCES)


def test_float_export_must_agree_and_match_probabilities():
    validation.check("model_f32.tflite", metrics(0.98, 0.9995, 5e-6), 0.98, quantized=False, tolerances=TOLERANCES)
    with pytest.raises(validation.ExportValidationError, match="model_f32.onnx: top-1 agrees .* 99.80%"):
        validation.check("model_f32.onnx", metrics(0.98, 0.998), 0.98, quantized=False, tolerances=TOLERANCES)
    with pytest.raises(validation.ExportValidationError, match="differ from Keras by up to 2.00e-03"):
        validation.check("model_f32.onnx", metrics(0.98, 1.0, 2e-3), 0.98, quantized=False, tolerances=TOLERANCES)


def test_manifest_entry_records_role_hash_size_and_details(tmp_path):
    require_tensorflow("recording the tool versions (tensorflow-cpu among them)")
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(b"\x00" * 100)
    entry = manifest.file_entry(path, "int8-model", precision="int8", **metrics(0.98))
    assert entry["bytes"] == 100 and entry["precision"] == "int8" and entry["role"] == "int8-model"
    assert entry["sha256"] == runtime_manifest.sha256_of(path)
    document = manifest.build_manifest(
        {"file": "model.keras", "test_accuracy": 0.985}, {path.name: entry}, (32, 32, 3), ("cat", "dog"),
        "labels.txt", "plain", "as-is", {"images": 10, "seed": 0},
        {"int8_max_accuracy_drop_points": 0.5, "float_min_agreement": 0.999}, "data.npz")
    parsed = runtime_manifest.Manifest.parse(document)
    assert parsed.classes == ("cat", "dog") and parsed.input_shape == (32, 32, 3) and parsed.preparation == "plain"
    assert document["tools"]["tensorflow-cpu"] is not None and document["tools"]["python"].startswith("3.")


def test_building_a_manifest_that_breaks_the_schema_fails_before_writing(tmp_path):
    with pytest.raises(runtime_manifest.ManifestFormatError, match="field 'classes'"):
        manifest.build_manifest({"test_accuracy": 0.9}, {}, (28, 28, 1), ("only one",), "x", "digit",
                                "light-on-dark", {"images": 1, "seed": 0}, {"int8_max_accuracy_drop_points": 0.5}, "d")
