"""The manifest schema: what a valid manifest gives the device, and one-line refusals naming the field."""

import copy
import json

import pytest

from edge_runtime import errors, manifest

SHA = "ab" * 32


def valid_document():
    return {
        "format_version": manifest.FORMAT_VERSION,
        "source_model": {"file": "model.keras", "test_accuracy": 0.9},
        "input": {"shape": [28, 28, 1], "layout": "NHWC", "scaling": "uint8 / 255"},
        "classes": ["T-shirt/top", "Trouser", "Pullover"],
        "class_names_source": "labels.txt",
        "preparation": {"name": "plain", "polarity": "light-on-dark"},
        "data": {"source": "/data/fashion"},
        "calibration": {"images": 300, "seed": 0},
        "tolerances": {"int8_max_accuracy_drop_points": 0.5, "float_min_agreement": 0.999},
        "files": {
            "model_int8.tflite": {"role": "int8-model", "sha256": SHA, "bytes": 10, "precision": "int8",
                                  "test_accuracy": 0.89},
            "model_f32.tflite": {"role": "float-reference", "sha256": SHA, "bytes": 10, "precision": "float32",
                                 "test_accuracy": 0.9},
            "test_set.npz": {"role": "test-set", "sha256": SHA, "bytes": 10, "images": 500},
        },
    }


def test_a_valid_manifest_gives_roles_classes_shape_and_tolerance():
    parsed = manifest.Manifest.parse(valid_document())
    assert parsed.classes == ("T-shirt/top", "Trouser", "Pullover") and parsed.num_classes == 3
    assert parsed.input_shape == (28, 28, 1) and parsed.preparation == "plain"
    assert parsed.files_with_role(manifest.ROLE_INT8_MODEL) == ["model_int8.tflite"]
    assert parsed.file_with_role(manifest.ROLE_FLOAT_REFERENCE) == "model_f32.tflite"
    assert parsed.file_with_role(manifest.ROLE_TEST_SET) == "test_set.npz"
    assert parsed.files["test_set.npz"].images == 500 and parsed.tolerance_points == 0.5
    assert parsed.float_min_agreement == 0.999


def mutate(path, value):
    document = copy.deepcopy(valid_document())
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return document


@pytest.mark.parametrize(("path", "value", "message"), [
    (("format_version",), 1, "format_version 1 is not one this runtime reads"),
    (("format_version",), "2", "field 'format_version' must be an integer, got str"),
    (("classes",), KeyError, "field 'classes' is missing"),
    (("classes",), "0123456789", "field 'classes' must be a list of at least two non-empty strings, got str"),
    (("classes",), ["a", 3], "field 'classes' must be a list"),
    (("input",), "28x28", "field 'input' must be an object, got str"),
    (("input", "shape"), [28, 28], "field 'input.shape' must be \\[height, width, channels\\]"),
    (("input", "shape"), [28, 28, 4], "field 'input.shape' must be"),
    (("preparation", "name"), "magic", "field 'preparation.name' must be one of digit, plain"),
    (("source_model", "test_accuracy"), "0.98", "field 'source_model.test_accuracy' must be a number in \\[0, 1\\], got str"),
    (("source_model", "test_accuracy"), 98.6, "field 'source_model.test_accuracy' must be a number in \\[0, 1\\]"),
    (("tolerances", "int8_max_accuracy_drop_points"), -1, "must be a non-negative number"),
    (("tolerances", "float_min_agreement"), KeyError, "field 'tolerances.float_min_agreement' is missing"),
    (("tolerances", "float_min_agreement"), 99.9, "field 'tolerances.float_min_agreement' must be a number in \\[0, 1\\]"),
    (("files",), [], "field 'files' must be an object, got list"),
    (("files", "model_int8.tflite", "sha256"), KeyError, "field 'files.model_int8.tflite.sha256' is missing"),
    (("files", "model_int8.tflite", "role"), "model", "field 'files.model_int8.tflite.role' must be one of"),
    (("files", "test_set.npz", "images"), "many", "field 'files.test_set.npz.images' must be a positive integer"),
    (("files", "model_f32.tflite", "bytes"), True, "field 'files.model_f32.tflite.bytes' must be a positive integer"),
])
def test_a_bad_manifest_is_refused_in_one_line_naming_the_field(tmp_path, path, value, message):
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(mutate(path, value)))
    with pytest.raises(manifest.ManifestFormatError, match=message) as caught:
        manifest.read_manifest(manifest_path)
    assert str(caught.value).startswith(str(manifest_path)) and "\n" not in str(caught.value)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "null"])
def test_a_manifest_that_is_not_a_json_object_is_refused(tmp_path, content):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(errors.ModelFileError, match="manifest.json"):
        manifest.read_manifest(path)


def test_a_file_not_listed_or_changed_is_refused(tmp_path):
    parsed = manifest.Manifest.parse(valid_document())
    (tmp_path / "model_int8.tflite").write_bytes(b"0123456789")
    with pytest.raises(errors.IntegrityError, match="model_int8.tflite: sha256 .* does not match"):
        manifest.verify_against_manifest(tmp_path / "model_int8.tflite", parsed)
    (tmp_path / "other.tflite").write_bytes(b"x")
    with pytest.raises(errors.IntegrityError, match="other.tflite: not listed"):
        manifest.verify_against_manifest(tmp_path / "other.tflite", parsed)
    with pytest.raises(errors.ModelFileError, match="model_f32.tflite: listed in the manifest but missing"):
        manifest.verify_against_manifest(tmp_path / "model_f32.tflite", parsed)
