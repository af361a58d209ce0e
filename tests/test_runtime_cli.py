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
    assert [pathlib.Path(entry["name"]).name for entry in predictions] == ["a.pgm", "b.ppm"]
    assert predictions[0]["label"] == predictions[1]["label"]
    assert predictions[0]["class_name"] == str(predictions[0]["label"])  # the manifest's names of the digits


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


@pytest.mark.parametrize("target", ["model_int8.tflite", "bundle directory"])
def test_predict_without_options_imports_neither_argparse_nor_pathlib(bundle, tmp_path, target):
    """What `predict` on one PNG costs over a bare script is mostly imports (make bench): argparse is
    skipped for a plain command line, and pathlib (urllib.parse, ipaddress: ~3 ms) on the whole path.
    An editable install's finder may have loaded pathlib at start-up: it is dropped first, so a
    module of ours that imports it brings it back."""
    from PIL import Image

    digit = np.full((56, 56), 255, np.uint8)
    digit[10:46, 26:31] = 0  # a "1"
    Image.fromarray(digit).save(tmp_path / "one.png")
    program = ("import sys, runpy\nsys.modules.pop('pathlib', None)\nsys.argv = ['edge_runtime', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('edge_runtime', run_name='__main__')\nexcept SystemExit:\n    pass\n"
               "print('argparse loaded:', 'argparse' in sys.modules, file=sys.stderr)\n"
               "print('pathlib loaded:', 'pathlib' in sys.modules, file=sys.stderr)\n")
    model = str(bundle / "model_int8.tflite") if target == "model_int8.tflite" else str(bundle)
    result = run_cli("-c", program, "predict", model, str(tmp_path / "one.png"))
    assert "argparse loaded: False" in result.stderr and "one.png" in result.stdout, result.stderr
    if target == "model_int8.tflite":
        assert "pathlib loaded: False" in result.stderr, result.stderr
    result = run_cli("-c", program, "predict", model, str(tmp_path / "one.png"), "--json")
    assert "argparse loaded: True" in result.stderr, result.stderr
    result = run_cli("-c", program, "predict", str(bundle / "model_int8.tflite"), str(tmp_path / "one.png"), "--json")
    assert "argparse loaded: True" in result.stderr, result.stderr


def write_digit_photos(mnist, directory, count):
    """MNIST test digits as dark-on-light PNG photos; returns their paths."""
    from PIL import Image

    directory.mkdir(exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"digit{index}.png"
        Image.fromarray(255 - mnist.x_test[index]).resize((84, 84)).save(path)
        paths.append(path)
    return paths


def test_one_bad_file_among_good_ones_prints_every_good_result_then_one_line_for_it(bundle, mnist, tmp_path):
    first, second = write_digit_photos(mnist, tmp_path / "photos", 2)
    bad = tmp_path / "photos" / "notes.png"
    bad.write_text("not an image at all\n")
    result = run_cli("-m", "edge_runtime", "predict", str(bundle), str(first), str(bad), str(second))
    assert result.returncode == 1
    assert [line.split()[0] for line in result.stdout.splitlines()] == [str(first), str(second)]
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {bad}: ")
    as_json = run_cli("-m", "edge_runtime", "predict", str(bundle), str(first), str(bad), "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert [entry["name"] for entry in document["predictions"]] == [str(first)]
    assert len(document["errors"]) == 1 and document["errors"][0].startswith(f"{bad}: ")


def test_a_class_named_by_its_index_is_printed_once(bundle, mnist, tmp_path):
    (photo,) = write_digit_photos(mnist, tmp_path / "photos", 1)
    result = run_cli("-m", "edge_runtime", "predict", str(bundle), str(photo), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    # "digit0.png  7  0.123  1:0.100": the class once, its probability, then the runner-up.
    fields = result.stdout.split()
    assert len(fields) == 4 and fields[1] in [str(digit) for digit in range(10)] and "(" not in result.stdout


def test_version_and_the_bare_command_help_a_newcomer():
    from edge_runtime import __version__

    version = run_cli("-m", "edge_runtime", "--version")
    assert version.returncode == 0 and version.stdout == f"mnist-edge {__version__}\n"
    bare = run_cli("-m", "edge_runtime")
    assert bare.returncode == 0 and bare.stderr == ""
    # A command's line starts four spaces in; a help line too long for the width goes on further in.
    listed = [line.split()[0] for line in bare.stdout.splitlines() if line.startswith("    ") and line[4] != " "]
    assert listed == ["predict", "eval", "bench", "info", "samples", "serve", "install", "status", "rollback"]


@pytest.mark.parametrize("command, shown", [
    ("predict", ["a bundle directory (its int8 model, as its manifest says) or a model file", "(default: 3;"]),
    ("bench", ["images per call for the throughput figure (default: 256)", "(default: 200)"]),
    ("serve", ["TCP port (default: 8080;", "largest request body accepted (default: 20000000)",
               "request worker threads (default: 4)"]),
])
def test_help_shows_what_each_option_does_and_its_default(command, shown):
    result = run_cli("-m", "edge_runtime", command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal's width
    for phrase in shown:
        assert phrase in text, text


def test_a_bad_option_is_one_line_and_status_2(bundle):
    result = run_cli("-m", "edge_runtime", "predict", str(bundle), "x.png", "--top-k", "0")
    assert result.returncode == 2
    assert result.stderr == "error: mnist-edge predict: argument --top-k: must be a positive integer, got 0\n"


def test_every_command_takes_a_bundle_directory_and_runs_the_int8_model_its_manifest_names(bundle, mnist, tmp_path):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name in ("model_f32.tflite", "test_set.npz"):
        shutil.copy(bundle / name, renamed / name)
    shutil.copy(bundle / "model_int8.tflite", renamed / "digits-v2.tflite")
    document = json.loads((bundle / "manifest.json").read_text())
    document["files"] = {("digits-v2.tflite" if name == "model_int8.tflite" else name): entry
                         for name, entry in document["files"].items() if name != "model_int8.onnx"}
    (renamed / "manifest.json").write_text(json.dumps(document))
    (photo,) = write_digit_photos(mnist, tmp_path / "photos", 1)

    predicted = run_cli("-m", "edge_runtime", "predict", str(renamed), str(photo), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["model"] == str(renamed / "digits-v2.tflite")
    info = run_cli("-m", "edge_runtime", "info", str(renamed), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["path"] == str(renamed / "digits-v2.tflite")
    bench = run_cli("-m", "edge_runtime", "bench", str(renamed), "--runs", "5", "--batch-size", "16")
    assert bench.returncode == 0, bench.stderr
    assert f"{renamed / 'digits-v2.tflite'} (" in bench.stdout
    evaluated = run_cli("-m", "edge_runtime", "eval", str(renamed), "--json", "--tolerance", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    assert [result["model"] for result in json.loads(evaluated.stdout)["results"]] == ["digits-v2.tflite"]


def test_top_k_beyond_the_classes_lists_them_all(bundle, mnist, tmp_path):
    (photo,) = write_digit_photos(mnist, tmp_path / "photos", 1)
    result = run_cli("-m", "edge_runtime", "predict", str(bundle), str(photo), "--top-k", "11", "--json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)["predictions"]
    assert sorted(entry["label"] for entry in record["top_k"]) == list(range(10))
    assert set(record) == {"name", "label", "class_name", "probability", "top_k"}


def test_eval_on_another_test_set_judges_against_the_float_reference_on_those_images(bundle, tmp_path):
    with np.load(bundle / "test_set.npz") as archive:
        np.savez(tmp_path / "part.npz", x_test=archive["x_test"][100:160], y_test=archive["y_test"][100:160])
    int8 = run_cli("-m", "edge_runtime", "eval", str(bundle), "--test-set", str(tmp_path / "part.npz"),
                   "--tolerance", "100", "--json")
    assert int8.returncode == 0, int8.stderr
    document = json.loads(int8.stdout)
    assert document["float_accuracy_source"] == "from model_f32.tflite run here on the same 60 images"
    # The float reference evaluated on its own, on the same images, is the figure the int8 models were held to.
    alone = run_cli("-m", "edge_runtime", "eval", str(bundle / "model_f32.tflite"), "--test-set",
                    str(tmp_path / "part.npz"), "--tolerance", "100", "--json")
    assert alone.returncode == 0, alone.stderr
    reference_accuracy = json.loads(alone.stdout)["results"][0]["accuracy"]
    # Every int8 model an installed interpreter runs (the device venv has no onnxruntime) was held to it.
    results = document["results"]
    assert "model_int8.tflite" in [result["model"] for result in results]
    assert [result["float_accuracy"] for result in results] == [reference_accuracy] * len(results)


def test_eval_images_n_evaluates_the_first_n_test_images_against_the_float_reference_on_them(bundle):
    result = run_cli("-m", "edge_runtime", "eval", str(bundle), "--images", "60", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["float_accuracy_source"] == "from model_f32.tflite run here on the same 60 images"
    assert {entry["images"] for entry in document["results"]} == {60}
    refused = run_cli("-m", "edge_runtime", "eval", str(bundle), "--images", "0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
