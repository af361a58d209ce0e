"""`python -m edge_runtime` in a subprocess, as a device user runs it — including with TensorFlow gone."""

import importlib.util
import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import run_cli

# Run a command with TensorFlow and Keras made unimportable, then prove they never loaded.
BLOCK_TENSORFLOW = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorflow_cpu"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Blocker())
sys.argv = ["edge_runtime", *sys.argv[1:]]
try:
    runpy.run_module("edge_runtime", run_name="__main__")
except SystemExit as exit:
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
    print("heavy modules loaded:", loaded, file=sys.stderr)
    raise
"""


@pytest.fixture
def bundle(fixture_bundle, tmp_path):
    for name in ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json", "test_set.npz"):
        shutil.copy(fixture_bundle / name, tmp_path / name)
    return tmp_path


def test_eval_and_info_run_with_tensorflow_unimportable(bundle):
    result = run_cli("-c", BLOCK_TENSORFLOW, "eval", str(bundle), "--json", "--tolerance", "100")
    assert result.returncode == 0, result.stderr
    assert "heavy modules loaded: []" in result.stderr
    report = json.loads(result.stdout)
    # Every int8 model the installed interpreters can run; the device venv has LiteRT alone, and says so.
    if importlib.util.find_spec("onnxruntime") is None:
        assert {row["model"] for row in report["results"]} == {"model_int8.tflite"}
        assert "note: skipping model_int8.onnx: no interpreter for it is installed" in result.stderr
    else:
        assert {row["model"] for row in report["results"]} == {"model_int8.tflite", "model_int8.onnx"}
    info = run_cli("-c", BLOCK_TENSORFLOW, "info", str(bundle / "model_int8.tflite"))
    assert info.returncode == 0 and "scale" in info.stdout and "(verified)" in info.stdout


def test_eval_reproduces_the_accuracy_recorded_at_export(bundle):
    result = run_cli("-m", "edge_runtime", "eval", str(bundle), "--json", "--strict", "--tolerance", "100")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    for row in json.loads(result.stdout)["results"]:
        assert row["images"] == manifest["files"]["test_set.npz"]["images"]
        assert row["accuracy"] == manifest["files"][row["model"]]["test_accuracy"]
        assert row["matches_export"] is True
        assert 0.0 <= row["agreement_with_float"] <= 1.0


def test_eval_fails_with_status_3_naming_the_model_when_the_drop_exceeds_the_tolerance(bundle):
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source_model"]["test_accuracy"] = 1.0  # an impossible float model: every int8 model "drops"
    manifest_path.write_text(json.dumps(manifest))
    # The fixture's export recorded a tolerance of 5 points (its test set is rich in int8's misses); 0.5 is given here.
    result = run_cli("-m", "edge_runtime", "eval", str(bundle / "model_int8.tflite"), "--tolerance", "0.5")
    assert result.returncode == 3
    assert "FAILED: model_int8.tflite: accuracy" in result.stderr and "below the float model's 100.00%" in result.stderr
    assert "FAIL" in result.stdout


def test_eval_refuses_a_tampered_model_in_one_line(bundle):
    path = bundle / "model_int8.tflite"
    path.write_bytes(path.read_bytes() + b"appended")
    result = run_cli("-m", "edge_runtime", "eval", str(bundle))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: sha256")
    assert "Traceback" not in result.stderr


def test_eval_without_a_test_set_says_so(bundle):
    (bundle / "test_set.npz").unlink()
    result = run_cli("-m", "edge_runtime", "eval", str(bundle))
    assert result.returncode == 1 and "test_set.npz: listed in the manifest but missing" in result.stderr


def test_info_on_a_text_file_named_tflite(tmp_path):
    fake = tmp_path / "model.tflite"
    fake.write_text("hello")
    result = run_cli("-m", "edge_runtime", "info", str(fake))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {fake}: not a TFLite model (no TFL3 identifier)"


def test_bench_reports_every_figure_as_json(bundle):
    result = run_cli("-m", "edge_runtime", "bench", str(bundle / "model_int8.tflite"), "--json", "--runs", "30")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "litert" and report["threads"] == 1
    latency = report["latency_batch1_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert report["throughput_images_per_s"] > 0 and report["cold_start_s"] > 0
    # A process that imported numpy and an interpreter holds at least a few MiB.
    assert report["peak_rss_mib"] > 10


def test_the_console_script_is_installed():
    script = shutil.which("mnist-edge", path=str(pathlib.Path(sys.executable).parent))
    assert script is not None, "pip install -e . should have installed the mnist-edge script"
    result = run_cli("--help", python=script)
    assert result.returncode == 0 and "predict" in result.stdout and "eval" in result.stdout


def test_predict_reads_every_image_kind_in_a_directory_and_names_classes(bundle, digits, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    digit = 255 - digits.x_test[0]
    (pictures / "a.pgm").write_bytes(b"P5 28 28 255\n" + digit.tobytes())
    (pictures / "b.ppm").write_bytes(b"P6 28 28 255\n" + np.repeat(digit[..., None], 3, axis=2).tobytes())
    (pictures / "notes.txt").write_text("not a picture")
    result = run_cli("-m", "edge_runtime", "predict", str(bundle / "model_int8.tflite"), str(pictures), "--json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert [pathlib.Path(entry["file"]).name for entry in predictions] == ["a.pgm", "b.ppm"]
    assert predictions[0]["label"] == predictions[1]["label"]
    assert predictions[0]["class"] == str(predictions[0]["label"])  # the manifest's names of the digits


def test_a_model_without_a_manifest_says_so_once_on_stderr_and_keeps_stdout_clean(bundle, digits, tmp_path):
    lone = tmp_path / "alone"
    lone.mkdir()
    shutil.copy(bundle / "model_int8.tflite", lone / "model_int8.tflite")
    np.save(lone / "digit.npy", digits.x_test[0])
    result = run_cli("-m", "edge_runtime", "predict", str(lone / "model_int8.tflite"), str(lone / "digit.npy"), "--json")
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {lone / 'model_int8.tflite'}: no manifest.json beside it: integrity not checked, "
                     "classes named by index"]


def test_reference_kernels_are_what_the_numpy_engine_computes_and_eval_json_carries_peak_rss(bundle, tmp_path):
    model = str(bundle / "model_int8.tflite")
    outputs = {}
    for name, backend, kernels in (("reference", "litert", "reference"), ("numpy", "numpy", "")):
        result = run_cli("-m", "edge_runtime", "eval", model, "--allow-missing", "--backend", backend, "--json",
                         "--tolerance", "100", "--save-outputs", str(tmp_path / name),
                         env={"MNIST_EDGE_TFLITE_KERNELS": kernels})
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert 10 < document["peak_rss_mib"] < 2000
        outputs[name] = np.load(tmp_path / name / f"model_int8.tflite.{backend}.npy")
    np.testing.assert_array_equal(outputs["reference"], outputs["numpy"])


def test_an_unknown_kernels_choice_is_refused_in_one_line(bundle):
    result = run_cli("-m", "edge_runtime", "info", str(bundle / "model_int8.tflite"), "--backend", "litert",
                     env={"MNIST_EDGE_TFLITE_KERNELS": "fast"})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: MNIST_EDGE_TFLITE_KERNELS='fast': choose from default, reference"


def test_platform_report_names_this_machine_and_the_numpy_engine_arithmetic():
    result = run_cli("-m", "edge_runtime.cli.platform_report", env={"MNIST_EDGE_NUMPY_ARITHMETIC": "integer"})
    assert result.returncode == 0, result.stderr
    facts = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert facts["platform-numpy"] == np.__version__
    assert facts["platform-numpy-engine-arithmetic"] == "integer"
    assert "numpy" in facts["platform-backends"].split(",")


@pytest.mark.parametrize("argv", [
    ["predict", "model_int8.tflite", "digit.png"],
    ["predict", "bundle/model.tflite", "a.png", "scans/", "-"],
])
def test_predict_read_without_argparse_gets_what_argparse_gives(argv):
    """The plain `predict MODEL IMAGE...` is parsed without argparse; its result must be argparse's."""
    from edge_runtime.cli import main as cli, options

    assert vars(cli.parse_arguments(argv)) == vars(options.build_parser().parse_args(argv))
    assert vars(cli.parse_arguments(argv)) == vars(options.build_parser("predict").parse_args(argv))


def test_predict_without_options_does_not_import_argparse(bundle, tmp_path):
    from PIL import Image

    digit = np.full((56, 56), 255, np.uint8)
    digit[10:46, 26:31] = 0  # a "1"
    Image.fromarray(digit).save(tmp_path / "one.png")
    program = ("import sys, runpy\nsys.argv = ['edge_runtime', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('edge_runtime', run_name='__main__')\nexcept SystemExit:\n    pass\n"
               "print('argparse loaded:', 'argparse' in sys.modules, file=sys.stderr)\n")
    result = run_cli("-c", program, "predict", str(bundle / "model_int8.tflite"), str(tmp_path / "one.png"))
    assert "argparse loaded: False" in result.stderr and "one.png" in result.stdout, result.stderr
    result = run_cli("-c", program, "predict", str(bundle / "model_int8.tflite"), str(tmp_path / "one.png"), "--json")
    assert "argparse loaded: True" in result.stderr, result.stderr
