"""The whole chain for real: train three epochs, export four files, validate them, read the manifest.

Slow (about a minute and a half on two cores): it runs TensorFlow training, the TFLite and ONNX
converters and the interpreters, each through its command line as a user would.
"""

import json
import re
import shutil

import numpy as np
import pytest

from edge_runtime import classifier, manifest
from tests.conftest import MAKE_ENVIRONMENT, run_cli
from tests.digit_photos import write_photos

pytestmark = pytest.mark.slow
EXPORTS = ("model_f32.tflite", "model_int8.tflite", "model_f32.onnx", "model_int8.onnx")
# A line of TensorFlow's C++ logging (absl): "E0000 00:00:1796480969.809947   25985 node_def_util.cc:682] ...",
# "I0000 ... port.cc:153] oneDNN custom operations are on ...", and absl's notice before the first one.
NATIVE_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                             r"|[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\])", re.MULTILINE)


def assert_a_clean_log(stage, log):
    """No TensorFlow C++ line and no progress-bar frame ("\r") in what `stage` wrote into a file."""
    native = NATIVE_LOG_LINE.search(log)
    assert native is None, f"{stage}: {log[native.start():native.start() + 200]}"
    assert "\r" not in log, f"{stage}: {log.count(chr(13))} carriage returns"


def test_the_native_log_pattern_knows_the_lines_users_saw():
    seen = ["E0000 00:00:1796480969.809947   25985 node_def_util.cc:682] NodeDef mentions attribute use_unbounded",
            "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
            "I0000 00:00:1796481557.820083    9636 port.cc:153] oneDNN custom operations are on."]
    assert all(NATIVE_LOG_LINE.search(f"Epoch 1/3\n{line}\n") for line in seen)
    assert not NATIVE_LOG_LINE.search("Epoch 1/3\n422/422 - 21s - 51ms/step - accuracy: 0.9754\nWARNING: low disk\n")


def test_train_and_export_logs_hold_no_native_lines_and_a_line_per_epoch(training_run):
    _, logs = training_run
    for stage, log in logs.items():
        assert_a_clean_log(stage, log)
    epochs = re.findall(r"^Epoch (\d+)/3\n\d+/\d+ - \d+s - .*val_accuracy: [\d.]+", logs["train"], re.MULTILINE)
    assert epochs == ["1", "2", "3"], logs["train"][-2000:]


def test_float_model_reaches_the_seed_accuracy(trained):
    history = json.loads((trained / "history.json").read_text())
    assert history["epochs"] == 3 and len(history["history"]["val_accuracy"]) == 3
    assert history["parameters"] == 34826
    assert history["test_accuracy"] >= 0.980
    assert (trained / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_int8_export_is_within_half_a_point_of_float(trained):
    document = manifest.read_manifest(trained / "manifest.json")
    assert set(document.files) == {*EXPORTS, "test_set.npz"}
    assert sorted(document.files_with_role(manifest.ROLE_INT8_MODEL)) == ["model_int8.onnx", "model_int8.tflite"]
    for name in ("model_int8.tflite", "model_int8.onnx"):
        drop_points = 100 * (document.float_accuracy - document.files[name].test_accuracy)
        assert drop_points <= 0.5, f"{name} lost {drop_points:.2f} points"
    for name in ("model_f32.tflite", "model_f32.onnx"):
        assert document.files[name].details["agreement_with_keras"] >= 0.999


def test_manifest_describes_the_files_as_they_are(trained, mnist):
    document = manifest.read_manifest(trained / "manifest.json")
    for name in (*EXPORTS, "test_set.npz"):
        entry = document.files[name]
        assert entry.sha256 == manifest.sha256_of(trained / name)
        assert entry.bytes == (trained / name).stat().st_size
    assert document.classes == tuple("0123456789") and document.preparation == "digit"
    assert document.input_shape == (28, 28, 1) and document.files["test_set.npz"].images == 10000
    int8 = document.files["model_int8.tflite"].details
    assert int8["input"]["dtype"] == "int8" and int8["output"]["dtype"] == "int8"
    assert int8["input"]["quantization"]["scale"] > 0
    assert int8["input"]["shape"][1:] == [28, 28, 1]
    assert document.calibration["images"] == 300
    assert document.document["tools"]["tensorflow-cpu"] == "2.21.0"
    # The recorded accuracy, re-measured by a bare interpreter that shares no code with edge_runtime.
    accuracy = np.mean(bare_litert_int8_outputs(trained / "model_int8.tflite", mnist.x_test).argmax(axis=1) == mnist.y_test)
    assert accuracy == pytest.approx(int8["test_accuracy"], abs=1e-12)


def test_training_is_reproducible_within_a_tenth_of_a_point(trained, tmp_path):
    again = run_cli("-m", "train", "--output-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    first = json.loads((trained / "history.json").read_text())["test_accuracy"]
    second = json.loads((tmp_path / "history.json").read_text())["test_accuracy"]
    assert abs(first - second) <= 0.001


def test_a_failed_validation_names_the_file_and_leaves_nothing_behind(trained, tmp_path):
    shutil.copy(trained / "model.keras", tmp_path / "model.keras")
    failed = run_cli("-m", "export", "--model", str(tmp_path / "model.keras"), "--output-dir", str(tmp_path),
                     "--float-probability-tolerance", "1e-12")
    assert failed.returncode == 1
    assert "error: model_f32.tflite: probabilities differ from Keras by up to" in failed.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.keras"]


def test_bundle_installs_alone_in_a_fresh_venv_and_reproduces_the_int8_accuracy(trained, tmp_path):
    import subprocess
    import sys
    import tarfile

    built = run_cli("-m", "export.bundle", "--artifacts", str(trained), "--output", str(tmp_path / "bundle.tar.gz"))
    assert built.returncode == 0, built.stderr[-3000:]
    with tarfile.open(tmp_path / "bundle.tar.gz") as archive:
        archive.extractall(tmp_path / "device", filter="data")
    bundle = tmp_path / "device" / "mnist-edge-bundle"
    wheels = list(bundle.glob("mnist_edge-*.whl"))
    assert len(wheels) == 1
    assert sorted(path.name for path in bundle.iterdir() if path.suffix != ".whl") == [
        "DEPLOY.md", "manifest.json", "mnist-edge.service", "model_f32.tflite", "model_int8.onnx", "model_int8.tflite",
        "test_set.npz"]

    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheels[0]}[edge]"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "tensorflow" not in installed.lower() and "keras" not in installed.lower()
    assert "ai-edge-litert" in installed.lower() or "ai_edge_litert" in installed.lower()

    # Run from the bundle directory, not the repository, so only the installed wheel can be imported.
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "edge_runtime", "eval", str(bundle), "--strict", "--json"],
                            capture_output=True, text=True, cwd=bundle)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)["results"]
    # Only LiteRT is installed by [edge]: the ONNX model is skipped with a note, not failed.
    assert [row["model"] for row in rows] == ["model_int8.tflite"]
    assert "skipping model_int8.onnx" in result.stderr
    recorded = json.loads((trained / "manifest.json").read_text())["files"]["model_int8.tflite"]["test_accuracy"]
    assert rows[0]["accuracy"] == recorded and rows[0]["images"] == 10000

    # And it classifies image files there: photos of test digits, JPEG and PNG, via the console script.
    from train import data

    test_set = data.load_dataset()
    photos = [*write_photos(test_set.x_test[:10], test_set.y_test[:10], tmp_path / "photos", suffix=".jpg"),
              *write_photos(test_set.x_test[10:20], test_set.y_test[10:20], tmp_path / "photos", suffix=".png", seed=1)]
    predicted = subprocess.run([str(venv / "bin" / "mnist-edge"), "predict", "model_int8.tflite", *map(str, photos), "--json"],
                               capture_output=True, text=True, cwd=bundle)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    labels = [entry["label"] for entry in json.loads(predicted.stdout)["predictions"]]
    assert [entry["class_name"] for entry in json.loads(predicted.stdout)["predictions"]] == [str(label) for label in labels]
    assert sum(label == int(truth) for label, truth in zip(labels, test_set.y_test[:20])) >= 19


def test_photos_of_digits_are_classified_as_well_as_the_digits_themselves(trained, mnist, tmp_path):
    """500 test digits written as photos (dark ink on light paper, 8× larger, off-centre, noisy, JPEG)
    and classified by `predict` from the files: as accurate as the 28×28 originals, within 1 point."""
    count = 500
    photos = write_photos(mnist.x_test[:count], mnist.y_test[:count], tmp_path, suffix=".jpg")
    result = run_cli("-m", "edge_runtime", "predict", str(trained / "model_int8.tflite"), str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(result.stdout)["predictions"]
    assert [entry["name"] for entry in predictions] == [str(path) for path in photos]
    from_photos = np.mean([entry["label"] for entry in predictions] == mnist.y_test[:count])
    from_digits = np.mean(classifier.Classifier.load(trained / "model_int8.tflite").predict(mnist.x_test[:count]).labels
                          == mnist.y_test[:count])
    assert from_photos >= from_digits - 0.01, (from_photos, from_digits)


def bare_litert_int8_outputs(path, images):
    """Int8 outputs of a .tflite model from the bare LiteRT interpreter, quantizing by hand: a check
    on `compare` that shares none of edge_runtime's code."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], (len(images), *images.shape[1:], 1))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    quantized = np.clip(np.round(images.astype(np.float32)[..., None] / 255 / scale) + zero_point, -128, 127)
    interpreter.set_tensor(source["index"], quantized.astype(np.int8))
    interpreter.invoke()
    return interpreter.get_tensor(target["index"])


def test_compare_report_matches_an_independent_evaluation(trained, mnist, tmp_path):
    import keras

    result = run_cli("-m", "compare", "--artifacts", str(trained), "--output-dir", str(tmp_path / "report"), "--no-speed",
                     env=MAKE_ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_a_clean_log("compare", result.stdout + result.stderr)
    assert re.search(r"^  \[1/\d+\] model.keras \(keras\)$", result.stdout, re.MULTILINE), result.stdout[:1000]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {(row["model"], row["runtime"]): row for row in saved["rows"]}
    assert {"model.keras", "model_f32.tflite", "model_int8.tflite", "model_f32.onnx", "model_int8.onnx"} == {
        model for model, _ in rows}

    labels = mnist.y_test.astype(np.int64)
    float_labels = keras.models.load_model(trained / "model.keras").predict(
        mnist.x_test[..., None].astype(np.float32) / 255, batch_size=1000, verbose=0).argmax(axis=1)
    int8_labels = bare_litert_int8_outputs(trained / "model_int8.tflite", mnist.x_test).argmax(axis=1)
    int8 = rows[("model_int8.tflite", "litert")]
    assert rows[("model.keras", "keras")]["accuracy"] == np.mean(float_labels == labels)
    assert int8["accuracy"] == np.mean(int8_labels == labels)
    assert int8["only_float_right"] == int(np.sum((float_labels == labels) & (int8_labels != labels)))
    assert int8["only_this_right"] == int(np.sum((float_labels != labels) & (int8_labels == labels)))
    assert int8["agreement_with_float"] == np.mean(int8_labels == float_labels)
    low, high = int8["change_ci_points"]
    assert low <= int8["change_points"] <= high
    assert saved["disagreements"]["count"] == int(np.sum(int8_labels != float_labels))
    # LiteRT and TensorFlow's tf.lite run the same default kernels: identical outputs. The numpy
    # engine is bit-exact with the reference kernels, which round differently from the default ones
    # on a few images (../shared/DESIGN.md): labels may differ there, on very few images.
    for finding in saved["consistency"]:
        if finding["model"] == "model_int8.tflite" and "numpy" not in finding["runtimes"]:
            assert finding["images_with_different_outputs"] == 0, finding
        elif finding["model"] == "model_int8.tflite":
            assert finding["images_with_different_labels"] <= 10, finding
    for picture in ("confusion_matrices.png", "per_class_accuracy.png", "disagreements.png", "training_curves.png"):
        assert (tmp_path / "report" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_gate_fails_naming_the_model_and_ranks_layers(trained, untrained_export, tmp_path):
    """An int8 file that has lost its accuracy (the untrained network's, re-listed in the manifest as
    if exported): exit 3, the model named with its drop, and the per-layer error added to the report."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(trained, artifacts)
    shutil.copy(untrained_export / "model_int8.tflite", artifacts / "model_int8.tflite")
    document = json.loads((artifacts / "manifest.json").read_text())
    entry = document["files"]["model_int8.tflite"]
    entry["sha256"] = manifest.sha256_of(artifacts / "model_int8.tflite")
    entry["bytes"] = (artifacts / "model_int8.tflite").stat().st_size
    (artifacts / "manifest.json").write_text(json.dumps(document))
    result = run_cli("-m", "compare", "--artifacts", str(artifacts), "--output-dir", str(tmp_path / "report"),
                     "--no-speed")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "FAILED: model_int8.tflite (litert): accuracy" in result.stderr
    assert "points below the float model's 98." in result.stderr and "(tolerance 0.50)" in result.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Quantization error by layer (TFLite)" in text and "| CONV_2D |" in text


def test_compare_tests_every_model_on_a_second_test_set_too(trained, mnist, tmp_path):
    """`make compare EXTRA_DATA=samples.npz`: the x_test of a Keras-layout file (what `mnist-edge
    samples --out` writes) is a second test set; the report has both, figures checked by hand."""
    second = tmp_path / "samples.npz"
    np.savez(second, x_train=mnist.x_test[:5], y_train=mnist.y_test[:5],
             x_test=mnist.x_test[9000:9300], y_test=mnist.y_test[9000:9300])
    result = run_cli("-m", "compare", "--artifacts", str(trained), "--output-dir", str(tmp_path / "report"),
                     "--no-speed", "--second-test-set", str(second))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["images"] == 10000 and saved["second_test_set"]["images"] == 300
    rows = {(row["model"], row["runtime"]): row for row in saved["second_test_set"]["rows"]}
    int8_labels = bare_litert_int8_outputs(trained / "model_int8.tflite", mnist.x_test[9000:9300]).argmax(axis=1)
    assert rows[("model_int8.tflite", "litert")]["accuracy"] == np.mean(int8_labels == mnist.y_test[9000:9300])
    assert saved["second_test_set"]["gate"]["passed"] is True
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"## Second test set: {second} (300 images)" in text and "**Gate on this set:** passed." in text
    assert f"Second test set ({second}):" in result.stdout
