"""A bundle's files found by manifest role: the int8 model a command runs, the float reference and its interpreter."""

import pytest

from edge_runtime import backends, bundle, errors, manifest

SHA = "ab" * 32


def bundle_manifest(files):
    entries = {}
    for name, role in files:
        entry = {"role": role, "sha256": SHA, "bytes": 1}
        if role == "test-set":
            entry["images"] = 10
        else:
            entry.update(precision="float32" if role == "float-reference" else "int8", test_accuracy=0.9)
        entries[name] = entry
    return manifest.Manifest.parse({
        "format_version": manifest.FORMAT_VERSION, "source_model": {"file": "m.keras", "test_accuracy": 0.9},
        "input": {"shape": [28, 28, 1], "layout": "NHWC", "scaling": "uint8 / 255"},
        "classes": ["a", "b"], "class_names_source": "test", "preparation": {"name": "digit", "polarity": "light-on-dark"},
        "data": {"source": "test"}, "calibration": {"images": 1, "seed": 0},
        "tolerances": {"int8_max_accuracy_drop_points": 0.5, "float_min_agreement": 0.999}, "files": entries,
    })


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly these interpreters are installed."""
    def install(*names):
        monkeypatch.setattr(backends, "available_backends", lambda: list(names))
    return install


def test_the_int8_model_is_the_first_listed_one_an_interpreter_runs(tmp_path, installed):
    document = bundle_manifest([("f32.tflite", "float-reference"), ("digits.onnx", "int8-model"),
                                ("digits.tflite", "int8-model")])
    for name in ("digits.onnx", "digits.tflite"):
        (tmp_path / name).write_bytes(b"x")
    installed("litert", "onnxruntime")
    assert bundle.int8_model(tmp_path, document) == tmp_path / "digits.onnx"
    installed("numpy")
    assert bundle.int8_model(tmp_path, document) == tmp_path / "digits.tflite"
    assert bundle.int8_model(tmp_path, document, backend="litert") == tmp_path / "digits.tflite"
    installed()
    with pytest.raises(errors.BackendUnavailableError, match="no installed interpreter runs its int8 models"):
        bundle.int8_model(tmp_path, document)


def test_missing_int8_models_and_a_missing_reference_are_named(tmp_path):
    document = bundle_manifest([("f32.tflite", "float-reference"), ("digits.tflite", "int8-model")])
    with pytest.raises(errors.ModelFileError) as missing:
        bundle.int8_model(tmp_path, document)
    assert str(missing.value) == f"{tmp_path}: digits.tflite listed in the manifest but missing"
    with pytest.raises(errors.ModelFileError) as missing:
        bundle.float_reference(tmp_path, document)
    assert str(missing.value) == f"{tmp_path}: f32.tflite listed in the manifest but missing"
    assert bundle.float_reference(tmp_path, document, allow_missing=True) is None


def test_the_float_reference_runs_on_the_forced_interpreter_when_it_can_never_on_the_numpy_engine(tmp_path, installed):
    reference = tmp_path / "f32.tflite"
    installed("litert", "tensorflow", "numpy")
    assert bundle.reference_backend(reference) == "litert"
    assert bundle.reference_backend(reference, forced="tensorflow") == "tensorflow"
    assert bundle.reference_backend(reference, forced="numpy") == "litert"
    installed("numpy")
    assert bundle.reference_backend(reference) is None


def test_a_directory_without_a_manifest_is_neither_a_bundle_nor_a_model(tmp_path):
    with pytest.raises(errors.ModelFileError) as refused:
        bundle.model_path(tmp_path)
    assert str(refused.value) == f"{tmp_path}: a directory without a manifest.json: give a bundle directory or a model file"
    with pytest.raises(errors.ModelFileError, match="no such bundle directory or model file"):
        bundle.model_path(tmp_path / "gone.tflite")
