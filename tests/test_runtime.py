"""edge_runtime on real exported files (the checked-in fixture bundle): backends, int8 I/O, batching, integrity
and bad model files."""

import fractions
import json
import math
import shutil

import numpy as np
import pytest

from edge_runtime import backends, classifier, errors, preprocessing
from tests.conftest import require_onnxruntime, run_cli

MODELS = ("model_f32.tflite", "model_int8.tflite", "model_f32.onnx", "model_int8.onnx")


@pytest.fixture
def bundle_copy(fixture_bundle, tmp_path):
    """A private copy of the exported files and manifest, safe to tamper with."""
    for name in (*MODELS, "manifest.json"):
        shutil.copy(fixture_bundle / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("name", MODELS)
def test_every_export_loads_and_classifies_single_images_and_batches(fixture_bundle, digits, name):
    if name.endswith(".onnx"):
        require_onnxruntime("an ONNX model")
    model = classifier.Classifier.load(fixture_bundle / name)
    single = model.predict(digits.x_test[0])
    batch = model.predict(digits.x_test[:9])
    assert single.probabilities.shape == (1, 10) and batch.probabilities.shape == (9, 10)
    assert np.allclose(batch.probabilities.sum(axis=1), 1.0, atol=0.02)
    # Resizing to each batch size must not change any image's result.
    assert np.array_equal(batch.probabilities[:1], single.probabilities)
    assert np.array_equal(model.predict(digits.x_test[:9], batch_size=4).probabilities, batch.probabilities)


def test_int8_model_io_matches_a_bare_interpreter_given_the_models_own_quantization(fixture_bundle, digits):
    from ai_edge_litert import interpreter as litert

    path = fixture_bundle / "model_int8.tflite"
    model = classifier.Classifier.load(path)
    bare = litert.Interpreter(model_path=str(path))
    bare.allocate_tensors()
    (input_details,), (output_details,) = bare.get_input_details(), bare.get_output_details()
    scale, zero_point = input_details["quantization"]
    for image in digits.x_test[:20]:
        # The reference computation written out by hand: q = round(x / scale) + zero_point.
        quantized = np.clip(np.round(image.astype(np.float32) / 255.0 / scale) + zero_point, -128, 127)
        bare.set_tensor(input_details["index"], quantized.astype(np.int8).reshape(1, 28, 28, 1))
        bare.invoke()
        expected = bare.get_tensor(output_details["index"])
        assert np.array_equal(model.run_raw(preprocessing.to_model_input(image, model.input_shape)), expected)
        out_scale, out_zero_point = output_details["quantization"]
        assert np.allclose(model.predict(image).probabilities, (expected.astype(np.float32) - out_zero_point) * out_scale)


def test_float_tflite_and_onnx_give_the_same_probabilities(fixture_bundle, digits):
    require_onnxruntime("an ONNX model")
    tflite = classifier.Classifier.load(fixture_bundle / "model_f32.tflite").predict(digits.x_test[:100])
    onnx = classifier.Classifier.load(fixture_bundle / "model_f32.onnx").predict(digits.x_test[:100])
    assert np.abs(tflite.probabilities - onnx.probabilities).max() < 1e-5


def test_top_k_is_sorted_best_first():
    predictions = classifier.Predictions(
        labels=np.array([2]), probabilities=np.array([[0.1, 0.2, 0.4, 0.3] + [0.0] * 6], np.float32)
    )
    labels, probabilities = predictions.top_k(3)
    assert labels.tolist() == [[2, 3, 1]] and probabilities[0].tolist() == pytest.approx([0.4, 0.3, 0.2])


def test_describe_reports_quantization_read_from_the_model(fixture_bundle):
    details = classifier.Classifier.load(fixture_bundle / "model_int8.tflite").describe()
    assert details["input"]["dtype"] == "int8" and details["output"]["dtype"] == "int8"
    manifest = json.loads((fixture_bundle / "manifest.json").read_text())
    assert details["input"]["quantization"] == manifest["files"]["model_int8.tflite"]["input"]["quantization"]


def test_a_tampered_model_is_refused_before_loading(bundle_copy, fixture_bundle, digits):
    path = bundle_copy / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    # 64 weight bytes inverted: one alone can leave a trained model's saturated outputs as they were.
    data[middle:middle + 64] = bytes(byte ^ 0xFF for byte in data[middle:middle + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(errors.IntegrityError, match="model_int8.tflite: sha256 .* does not match the manifest"):
        classifier.Classifier.load(path)
    # The override exists and is explicit: the changed file (flipped weight bytes) is then really
    # loaded, and answers differently from the exported one.
    tampered = classifier.Classifier.load(path, check_integrity=False).predict(digits.x_test)
    original = classifier.Classifier.load(fixture_bundle / "model_int8.tflite").predict(digits.x_test)
    assert not np.array_equal(tampered.raw, original.raw)


def test_a_model_the_manifest_does_not_list_is_refused(bundle_copy):
    shutil.copy(bundle_copy / "model_int8.tflite", bundle_copy / "other.tflite")
    with pytest.raises(errors.IntegrityError, match="other.tflite: not listed in the manifest"):
        classifier.Classifier.load(bundle_copy / "other.tflite")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.tflite", b"", "model file is empty"),
        ("model.tflite", b"this is a text file, not a model\n", "not a TFLite model \\(no TFL3 identifier\\)"),
        ("model.onnx", b"\x08\x07garbage that is not protobuf", "corrupt or unsupported ONNX model"),
        ("model.pb", b"anything", "unknown model format"),
    ],
)
def test_bad_model_files_get_a_one_line_error_naming_them(tmp_path, name, content, message):
    if name.endswith(".onnx"):
        require_onnxruntime("reading an ONNX file")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(errors.EdgeRuntimeError, match=f"{name}: {message}") as caught:
        classifier.Classifier.load(path)
    assert "\n" not in str(caught.value)


def test_a_truncated_tflite_model_is_refused(fixture_bundle, tmp_path):
    path = tmp_path / "model_int8.tflite"
    path.write_bytes((fixture_bundle / "model_int8.tflite").read_bytes()[:5000])
    with pytest.raises(errors.ModelFileError, match="model_int8.tflite: corrupt or unsupported TFLite model"):
        classifier.Classifier.load(path)


def test_a_missing_model_is_named(tmp_path):
    with pytest.raises(errors.ModelFileError, match="nothing.tflite: no such model file"):
        classifier.Classifier.load(tmp_path / "nothing.tflite")


def test_forcing_an_absent_interpreter_says_which_extra_to_install(fixture_bundle):
    if "tflite-runtime" in backends.available_backends():
        pytest.skip("tflite-runtime is installed here, so it cannot be shown missing")
    with pytest.raises(errors.BackendUnavailableError, match="pip install mnist-edge\\[tflite-runtime\\]"):
        classifier.Classifier.load(fixture_bundle / "model_int8.tflite", backend="tflite-runtime")


def test_forcing_a_backend_of_the_wrong_format_is_refused(fixture_bundle):
    require_onnxruntime("forcing onnxruntime")
    with pytest.raises(errors.BackendUnavailableError, match="backend 'onnxruntime' cannot run .tflite models"):
        classifier.Classifier.load(fixture_bundle / "model_int8.tflite", backend="onnxruntime")


def test_thread_count_reaches_the_interpreter(fixture_bundle, digits):
    """Observed on the interpreter itself: LiteRT starts threads - 1 workers of its own. A fresh
    process, so no other test's threads count."""
    code = (
        "import os, sys, numpy as np\n"
        "from edge_runtime import Classifier\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "model = Classifier.load(sys.argv[1], threads=int(sys.argv[2]))\n"
        "model.predict(np.zeros((64, 28, 28), np.uint8))\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n"
    )
    started = {threads: run_cli("-c", code, str(fixture_bundle / "model_int8.tflite"), str(threads))
               for threads in (1, 3)}
    assert all(result.returncode == 0 for result in started.values()), started
    assert int(started[1].stdout) == 0 and int(started[3].stdout) == 2
    one = classifier.Classifier.load(fixture_bundle / "model_int8.tflite", threads=1)
    three = classifier.Classifier.load(fixture_bundle / "model_int8.tflite", threads=3)
    assert np.array_equal(one.predict(digits.x_test[:50]).raw, three.predict(digits.x_test[:50]).raw)


def test_thread_count_reaches_onnxruntime(fixture_bundle):
    """onnxruntime reports the count it was given."""
    require_onnxruntime("an ONNX model")
    onnx = classifier.Classifier.load(fixture_bundle / "model_int8.onnx", threads=3)
    assert onnx.backend.session.get_session_options().intra_op_num_threads == 3


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx"])
def test_uint8_pictures_take_the_lookup_path_to_the_same_bits(fixture_bundle, digits, name):
    """uint8 pixels go through precomputed quantize/dequantize tables; the same images as [0, 1]
    floats take the general path. Raw outputs and probabilities must be identical."""
    if name.endswith(".onnx"):
        require_onnxruntime("an ONNX model")
    model = classifier.Classifier.load(fixture_bundle / name)
    through_tables = model.predict(digits.x_test)
    general = model.predict(preprocessing.to_unit_float(digits.x_test))
    assert np.array_equal(through_tables.raw, general.raw)
    assert np.array_equal(through_tables.probabilities, general.probabilities)


def quantized_by_hand(pixel, scale, zero_point):
    """TFLite's QUANTIZE on one [0, 1] pixel, from its definition and not from edge_runtime: the exact
    rational pixel / 255 / scale, rounded half away from zero, plus the zero point, clipped to int8."""
    exact = fractions.Fraction(pixel, 255) / fractions.Fraction(float(scale))
    rounded = math.floor(exact + fractions.Fraction(1, 2))  # exact >= 0, so "away from zero" is "up"
    return min(127, max(-128, rounded + zero_point))


def test_the_pixel_table_is_the_quantize_function_on_every_uint8_value(fixture_bundle):
    model = classifier.Classifier.load(fixture_bundle / "model_int8.tflite")
    expected = [quantized_by_hand(pixel, model.input.scale, model.input.zero_point) for pixel in range(256)]
    assert model._pixel_table.tolist() == expected
    # Calibrated on [0, 1] pixels, the fixture's input scale is 1/255 and its zero point -128: then
    # the textbook value is simply pixel - 128.
    assert (np.float32(model.input.scale), model.input.zero_point) == (np.float32(1 / 255), -128)
    assert expected == list(range(-128, 128))
    raw = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    assert np.array_equal(model.probabilities_from_raw(raw)[0],
                          (raw[0].astype(np.float32) - model.output.zero_point) * np.float32(model.output.scale))
