"""Bad input and bad options, as a hostile or unlucky user gives them, through the real commands.

Every case runs a command in a subprocess and checks four things: the exit status; exactly one
line on stderr, naming the thing and the problem; no traceback; and the files afterwards (the
bundle or artifacts as they were, nothing half-written, no temporary files left).
"""

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import FIXTURE_BUNDLE, REPO_ROOT, require_onnxruntime, run_cli

BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json", "test_set.npz")
FIXTURE_TEST_IMAGES = json.loads((FIXTURE_BUNDLE / "manifest.json").read_text())["files"]["test_set.npz"]["images"]


def snapshot(directory):
    """Every file under `directory` with its size and content hash: what 'unchanged' means here."""
    import hashlib

    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(pathlib.Path(directory).rglob("*")) if path.is_file()}


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def resign(bundle, name):
    """Rewrite the manifest's entry for `name` to match the file: a deliberate re-export by hand."""
    from edge_runtime import manifest

    def change(document):
        document["files"][name].update(sha256=manifest.sha256_of(bundle / name), bytes=(bundle / name).stat().st_size)
    edit_manifest(bundle, change)


def write_test_set(path, images, labels):
    np.savez_compressed(path, x_test=images, y_test=labels)
    return path


def written(path, content):
    """Write `content` (bytes or text) to `path`; return the path."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def strict_float_tolerance(document):
    # A real export records 99.9% agreement, which is what bounds how far the float figures may
    # differ; set here so that the case holds whatever the bundle's export was told.
    document["tolerances"]["float_min_agreement"] = 0.999


def fifo(path):
    os.mkfifo(path)
    return path


def loop(path):
    os.symlink(path, path)
    return path


# Each case: (id, setup(bundle, scratch, digits) -> argv after "python -m", exit status, fragment of
# the one stderr line). The model is bundle/model_int8.tflite unless the setup says otherwise.
def case_predict_image(make, fragment, exit_status=1):
    def setup(bundle, scratch, mnist):
        return ["edge_runtime", "predict", str(bundle / "model_int8.tflite"), str(make(scratch, mnist))]
    return setup, exit_status, fragment


def case_model(make, fragment, exit_status=1):
    def setup(bundle, scratch, mnist):
        np.save(scratch / "digit.npy", mnist.x_test[0])
        return ["edge_runtime", "predict", str(make(bundle, scratch)), str(scratch / "digit.npy")]
    return setup, exit_status, fragment


def case_eval(prepare, flags, fragment, exit_status=1):
    def setup(bundle, scratch, mnist):
        extra = prepare(bundle, scratch, mnist) or []
        return ["edge_runtime", "eval", str(bundle), *flags, *extra]
    return setup, exit_status, fragment


def truncated_png(scratch, mnist):
    from PIL import Image

    Image.fromarray(mnist.x_test[0]).resize((200, 200)).save(scratch / "whole.png")
    data = (scratch / "whole.png").read_bytes()
    (scratch / "cut.png").write_bytes(data[: len(data) // 2])
    return scratch / "cut.png"


def flipped(bundle, scratch):
    path = scratch / "model_int8.tflite"
    data = bytearray((bundle / "model_int8.tflite").read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    shutil.copy(bundle / "manifest.json", scratch / "manifest.json")
    return path


RUNTIME_CASES = {
    # Model files.
    "model missing": case_model(lambda b, s: s / "nothing.tflite", "nothing.tflite: no such bundle directory or model file"),
    "model is a directory without a manifest": case_model(lambda b, s: s, "scratch: a directory without a manifest.json"),
    "bundle without its int8 model": case_model(lambda b, s: (b / "model_int8.tflite").unlink() or
                                                (b / "model_int8.onnx").unlink() or b,
                                                "model_int8.tflite, model_int8.onnx listed in the manifest but missing"),
    "model empty": case_model(lambda b, s: written(s / "m.tflite", b""), "m.tflite: model file is empty"),
    "model is text": case_model(lambda b, s: written(s / "m.tflite", "hello"),
                                "m.tflite: not a TFLite model (no TFL3 identifier)"),
    "model truncated": case_model(lambda b, s: written(s / "m.tflite", (b / "model_int8.tflite").read_bytes()[:3000]),
                                  "m.tflite: corrupt or unsupported TFLite model"),
    "model unknown format": case_model(lambda b, s: written(s / "m.pb", b"x"), "m.pb: unknown model format"),
    "model is a FIFO": case_model(lambda b, s: fifo(s / "m.tflite"), "m.tflite: not a regular file"),
    "model is a symlink loop": case_model(lambda b, s: loop(s / "m.tflite"), "m.tflite: "),
    "model tampered": case_model(flipped, "model_int8.tflite: sha256 "),
    "model not in manifest": case_model(lambda b, s: shutil.copy(b / "model_int8.tflite", b / "extra.tflite"),
                                        "extra.tflite: not listed in the manifest"),
    "onnx garbage": case_model(lambda b, s: written(s / "m.onnx", b"\x08\x07junk"),
                               "m.onnx: corrupt or unsupported ONNX model"),
    # Images.
    "image missing": case_predict_image(lambda s, m: s / "gone.png", "gone.png: no such file"),
    "image empty": case_predict_image(lambda s, m: written(s / "e.png", b""), "e.png: empty file"),
    "image is text": case_predict_image(lambda s, m: written(s / "t.png", "notes"), "t.png: not an image"),
    "image truncated": case_predict_image(truncated_png, "cut.png: corrupt or truncated image data"),
    "image is a FIFO": case_predict_image(lambda s, m: fifo(s / "f.png"), "f.png: not a regular file"),
    "image symlink loop": case_predict_image(lambda s, m: loop(s / "l.png"), "l.png: cannot read"),
    "directory without images": case_predict_image(lambda s, m: (s / "empty").mkdir() or s / "empty",
                                                   "empty: directory holds no image files"),
    "npy with NaN": case_predict_image(lambda s, m: np.save(s / "n.npy", np.full((28, 28), np.nan)) or s / "n.npy",
                                       "n.npy: contains NaN"),
    "npy of objects": case_predict_image(lambda s, m: np.save(s / "o.npy", np.array([None] * 4), allow_pickle=True)
                                         or s / "o.npy", "o.npy: expected uint8 or float pixels"),
    "npy of a wrong shape": case_predict_image(lambda s, m: np.save(s / "w.npy", np.zeros((2, 3, 4, 5), np.uint8))
                                               or s / "w.npy", "w.npy: expected an image"),
    "blank image": case_predict_image(lambda s, m: written(s / "b.pgm", b"P5 40 40 255\n" + b"\xff" * 1600),
                                      "b.pgm: no digit found"),
    "pgm over the cap": case_predict_image(lambda s, m: written(s / "h.pgm", b"P5 20000 20000 255\n\0"),
                                           "h.pgm: image is 20000×20000"),
    # Options.
    "top-k 0": (lambda b, s, m: ["edge_runtime", "predict", str(b / "model_int8.tflite"), "x.png", "--top-k", "0"],
                2, "--top-k: must be a positive integer, got 0"),
    "threads 0": (lambda b, s, m: ["edge_runtime", "predict", str(b / "model_int8.tflite"), "x.png", "--threads", "0"],
                  2, "--threads: must be a positive integer, got 0"),
    "threads not a number": (lambda b, s, m: ["edge_runtime", "info", str(b / "model_int8.tflite"), "--threads", "two"],
                             2, "--threads: must be a positive integer, got 'two'"),
    "unknown backend": (lambda b, s, m: ["edge_runtime", "info", str(b / "model_int8.tflite"), "--backend", "gpu"],
                        2, "--backend: invalid choice: 'gpu'"),
    "bench runs 0": (lambda b, s, m: ["edge_runtime", "bench", str(b / "model_int8.tflite"), "--runs", "0"],
                     2, "--runs: must be a positive integer, got 0"),
    "bench batch -1": (lambda b, s, m: ["edge_runtime", "bench", str(b / "model_int8.tflite"), "--batch-size", "-1"],
                       2, "--batch-size: must be a positive integer, got -1"),
    "eval tolerance nan": case_eval(lambda b, s, m: None, ["--tolerance", "nan"], "--tolerance: must be a finite number", 2),
    "eval tolerance negative": case_eval(lambda b, s, m: None, ["--tolerance", "-1"], "--tolerance: must be a finite number", 2),
    "info on a directory without a manifest": (lambda b, s, m: ["edge_runtime", "info", str(s)], 1,
                                               "scratch: a directory without a manifest.json"),
    # Manifests.
    "manifest not JSON": case_model(lambda b, s: written(b / "manifest.json", "{oops") and b / "model_int8.tflite",
                                    "manifest.json: not a readable manifest"),
    "manifest accuracy as text": case_model(
        lambda b, s: edit_manifest(b, lambda d: d["source_model"].update(test_accuracy="0.98")) or b / "model_int8.tflite",
        "field 'source_model.test_accuracy' must be a number in [0, 1], got str"),
    "manifest files as a string": case_model(
        lambda b, s: edit_manifest(b, lambda d: d.update(files="all")) or b / "model_int8.tflite",
        "field 'files' must be an object, got str"),
    "manifest of another version": case_model(
        lambda b, s: edit_manifest(b, lambda d: d.update(format_version=1)) or b / "model_int8.tflite",
        "format_version 1 is not one this runtime reads"),
    "manifest missing classes": case_model(
        lambda b, s: edit_manifest(b, lambda d: d.pop("classes")) or b / "model_int8.tflite", "field 'classes' is missing"),
    "manifest with too few classes": case_model(
        lambda b, s: edit_manifest(b, lambda d: d.update(classes=["a", "b", "c"])) or b / "model_int8.tflite",
        "model_int8.tflite: the model has 10 outputs but its manifest names 3 classes"),
    # Test sets and bundles.
    "test set missing": case_eval(lambda b, s, m: (b / "test_set.npz").unlink(), [],
                                  "test_set.npz: listed in the manifest but missing"),
    "test set cut down": case_eval(lambda b, s, m: write_test_set(b / "test_set.npz", m.x_test[:20], m.y_test[:20]) and None,
                                   [], "test_set.npz: sha256 "),
    "test set cut and re-signed": case_eval(
        lambda b, s, m: (write_test_set(b / "test_set.npz", m.x_test[:20], m.y_test[:20]), resign(b, "test_set.npz")) and None,
        [], f"test_set.npz: holds 20 images, the manifest says {FIXTURE_TEST_IMAGES}"),
    # Every model now misses nearly every image: the int8 drop is let pass, so the one line is the float reference's.
    "test set relabelled": case_eval(
        lambda b, s, m: (write_test_set(b / "test_set.npz", m.x_test, (m.y_test + 1) % 10),
                         resign(b, "test_set.npz"), edit_manifest(b, strict_float_tolerance)) and None,
        ["--tolerance", "100"], "model_f32.tflite: accuracy", 3),
    "float reference missing": case_eval(lambda b, s, m: (b / "model_f32.tflite").unlink(), [],
                                         "model_f32.tflite listed in the manifest but missing"),
    "onnx model missing": case_eval(lambda b, s, m: (b / "model_int8.onnx").unlink(), [],
                                    "model_int8.onnx listed in the manifest but missing"),
    "float accuracy edited": case_eval(
        lambda b, s, m: edit_manifest(b, lambda d: (d["source_model"].update(test_accuracy=0.05),
                                                    strict_float_tolerance(d))), [],
        "cannot both be right; the manifest was changed", 3),
    "given test set corrupt": case_eval(lambda b, s, m: ["--test-set", str(written(s / "t.npz", b"PK\x03\x04junk"))],
                                        [], "t.npz: not a readable test set .npz"),
    "given test set float labels": case_eval(
        lambda b, s, m: ["--test-set", str(write_test_set(s / "t.npz", m.x_test[:10], m.y_test[:10] + 0.5))],
        [], "t.npz: y_test must hold integer class indices, got float64"),
    "given test set labels outside classes": case_eval(
        lambda b, s, m: ["--test-set", str(write_test_set(s / "t.npz", m.x_test[:10], np.full(10, 12)))],
        [], "t.npz: y_test holds labels 12..12, outside the model's 10 classes"),
    "given test set of another size": case_eval(
        lambda b, s, m: ["--test-set", str(write_test_set(s / "t.npz", np.zeros((4, 32, 32), np.uint8), np.zeros(4, int)))],
        [], "t.npz: images are (32, 32, 1) but the model takes (28, 28, 1)"),
    "given test set without labels": case_eval(
        lambda b, s, m: np.savez(s / "t.npz", x_test=m.x_test[:4]) or ["--test-set", str(s / "t.npz")],
        [], "t.npz: not a test set: no 'y_test' array"),
    "save outputs into a file": case_eval(
        lambda b, s, m: ["--save-outputs", str(written(s / "taken", "x"))],
        [], "taken: cannot save outputs"),
    "directory without a manifest": (lambda b, s, m: ["edge_runtime", "eval", str(s)], 1, "manifest.json: no such manifest"),
    "stdin empty": (lambda b, s, m: ["edge_runtime", "predict", str(b / "model_int8.tflite"), "-"], 1,
                    "<stdin>: no data (empty input)"),
    # A float model copied into the int8 model's place, its manifest entry re-hashed to match.
    "float model in the int8 role": case_model(lambda b, s: float_as_int8(b), "model_int8.tflite: the manifest lists "
                                               "it as an int8 model (int8-model) but it has float32 input and float32 "
                                               "output tensors"),
    "eval of a float model in the int8 role": case_eval(lambda b, s, m: float_as_int8(b) and None, [],
                                                        "it has float32 input and float32 output tensors"),
    "image name with a newline": case_predict_image(lambda s, m: s / "two\nlines.png", "two\\nlines.png: no such file"),
    "model name with a newline": case_model(lambda b, s: s / "two\nlines.tflite", "two\\nlines.tflite: no such bundle directory or model file"),
}


def float_as_int8(bundle):
    shutil.copy(bundle / "model_f32.tflite", bundle / "model_int8.tflite")
    resign(bundle, "model_int8.tflite")
    return bundle / "model_int8.tflite"


# The cases whose one line comes from onnxruntime reading the file: the device venv has LiteRT only.
NEEDS_ONNXRUNTIME = {"onnx garbage"}


@pytest.fixture
def device_bundle(fixture_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in BUNDLE_FILES:
        shutil.copy(fixture_bundle / name, bundle / name)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return bundle, scratch


def assert_one_clean_line(result, exit_status, fragment):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == exit_status, (result.returncode, result.stderr[-2000:])
    errors = [line for line in lines if not line.startswith("note:")]
    assert len(errors) == 1, lines
    assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", sorted(RUNTIME_CASES))
def test_the_runtime_cli_answers_bad_input_in_one_line(case, device_bundle, digits):
    bundle, scratch = device_bundle
    setup, exit_status, fragment = RUNTIME_CASES[case]
    if case in NEEDS_ONNXRUNTIME:
        require_onnxruntime(f"the case {case!r}")
    argv = setup(bundle, scratch, digits)
    before = snapshot(bundle)
    result = run_cli("-m", *argv, stdin_bytes=b"", timeout=300)
    assert_one_clean_line(result, exit_status, fragment)
    assert snapshot(bundle) == before  # nothing of the bundle changed or was left half-written
    assert not list(bundle.rglob("*.partial*")) and not list(scratch.rglob("*.partial*"))


@pytest.fixture
def unreadable_dir():
    """A directory outside pytest's private tmp, which an unprivileged user can enter."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="mnist-edge-perm-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(("what", "fragment"), [("image", "secret.png: permission denied"),
                                                ("test set", "test_set.npz: cannot read")])
def test_unreadable_files_are_named_in_one_line(what, fragment, fixture_bundle, unreadable_dir):
    """Permissions do not bind root, so the command runs as `nobody` (setpriv)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the command as an unprivileged user")
    for name in BUNDLE_FILES:
        shutil.copy(fixture_bundle / name, unreadable_dir / name)
        (unreadable_dir / name).chmod(0o644)
    secret = unreadable_dir / "secret.png"
    secret.write_bytes(b"\x89PNG not really")
    secret.chmod(0)
    if what == "test set":
        (unreadable_dir / "test_set.npz").chmod(0)
        argv = ["eval", str(unreadable_dir)]
    else:
        argv = ["predict", str(unreadable_dir / "model_int8.tflite"), str(secret)]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                             "-m", "edge_runtime", *argv], capture_output=True, text=True, env=environment,
                            cwd=unreadable_dir, timeout=300)
    assert_one_clean_line(result, 1, fragment)
    assert stat.S_IMODE(secret.stat().st_mode) == 0


# train, export and bundle: refused before any training or conversion starts (seconds, not minutes).
def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def mnist_like(mnist, count=50, **changes):
    arrays = {"x_train": mnist.x_train[:count], "y_train": mnist.y_train[:count],
              "x_test": mnist.x_test[:count], "y_test": mnist.y_test[:count]}
    arrays.update(changes)
    return arrays


WORKSTATION_CASES = {
    "train data missing": (lambda s, m, e: ["train", "--data", str(s / "none.npz")], "none.npz: no such file"),
    "train data not a zip": (lambda s, m, e: ["train", "--data", str((s / "d.npz").write_bytes(b"junk") and s / "d.npz")],
                             "d.npz: not a readable .npz file"),
    "train data empty file": (lambda s, m, e: ["train", "--data", str(written(s / "d.npz", b""))],
                              "d.npz: not a readable .npz file"),
    "train data float labels": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m, y_train=m.y_train[:50] + 0.5)))],
                                "train labels: expected integers"),
    "train data missing arrays": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", x_train=m.x_train[:5]))],
                                  "d.npz: missing arrays"),
    "train data of mixed sizes": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m, x_test=np.zeros((50, 32, 32), np.uint8))))],
                                  "train images are (28, 28) but test images are (32, 32)"),
    "train labels file missing": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m))), "--labels", str(s / "l.txt")],
                                  "l.txt: no such labels file"),
    "train labels too few": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m))), "--labels",
                                              str((s / "l.txt").write_text("a\nb\n") and s / "l.txt")],
                             "l.txt: 2 class names for data with 10 classes"),
    "train labels repeated": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m))), "--labels",
                                               str((s / "l.txt").write_text("a\n" * 10) and s / "l.txt")],
                              "l.txt: class names repeat"),
    "train epochs 0": (lambda s, m, e: ["train", "--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    "train validation split 1.5": (lambda s, m, e: ["train", "--validation-split", "1.5"],
                                   "argument --validation-split: must be a number from 0 up to (not including) 1, got 1.5"),
    "train epochs not a number": (lambda s, m, e: ["train", "--epochs", "three"],
                                  "argument --epochs: must be a positive integer, got 'three'"),
    "train output dir is a file": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m))),
                                                    "--output-dir", str((s / "f").write_text("x") and s / "f")],
                                   "f: not a directory"),
    "export model missing": (lambda s, m, e: ["export", "--model", str(s / "none.keras")], "none.keras: no trained model"),
    "export model not a zip": (lambda s, m, e: ["export", "--model", str((s / "m.keras").write_text("junk") and s / "m.keras")],
                               "m.keras: not a Keras model file"),
    "export calibration size 0": (lambda s, m, e: ["export", "--calibration-size", "0"], "calibration size must be at least 1"),
    "export tolerance nan": (lambda s, m, e: ["export", "--max-int8-drop", "nan"], "must be a finite number >= 0, got nan"),
    "export bad preparation": (lambda s, m, e: ["export", "--preparation", "magic"], "--preparation: invalid choice"),
    "export output dir is a file": (lambda s, m, e: ["export", "--model", str(e / "model.keras"), "--data", str(e / "small.npz"),
                                                     "--output-dir", str((s / "f").write_text("x") and s / "f")],
                                    "f: not a directory"),
    "export labels of the wrong count": (lambda s, m, e: ["export", "--model", str(e / "model.keras"), "--data", str(e / "small.npz"),
                                                          "--output-dir", str(s / "out"), "--labels",
                                                          str((s / "l.txt").write_text("a\nb\nc\n") and s / "l.txt")],
                                         "l.txt: 3 class names for data with 10 classes"),
    # Bad training data: refused, not trained into a model with empty classes.
    "train label 12 among 0..9": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(
                                      m, 200, y_train=np.where(np.arange(200) == 7, 12, m.y_train[:200]))))],
                                  "d.npz: 2 of 13 classes have no training images (classes 10, 11); if those "
                                  "classes are meant, add their images, else renumber the labels 0..N-1"),
    "train labels all 0": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(
                               m, y_train=np.zeros(50, np.uint8), y_test=np.zeros(50, np.uint8))))],
                           "d.npz: every label is 0: a classifier needs at least two classes; if one class was meant"),
    "train class without test images": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(
                                            m, 200, y_test=np.where(m.y_test[:200] == 9, 0, m.y_test[:200]))))],
                                        "d.npz: 1 of 10 classes have no test images (class 9)"),
    "train labels of twelve names": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m, 200))),
                                                      "--labels", str(written(s / "l.txt", "".join(f"c{i}\n" for i in range(12))))],
                                     "d.npz: 2 of 12 classes have no training images (classes 10, 11)"),
    "train extra data labelled -1": (lambda s, m, e: ["train", "--data", str(npz(s / "d.npz", **mnist_like(m, 200))),
                                                      "--extra-data", str(npz(s / "e.npz", **mnist_like(
                                                          m, 4, y_train=np.array([0, 1, -1, 2]))))],
                                     "e.npz: train labels: class indices must not be negative, found -1"),
    "export labels of twelve names": (lambda s, m, e: ["export", "--model", str(e / "model.keras"), "--data", str(e / "small.npz"),
                                                       "--output-dir", str(s / "out"), "--labels",
                                                       str(written(s / "l.txt", "".join(f"c{i}\n" for i in range(12))))],
                                      "small.npz: 2 of 12 classes have no training images (classes 10, 11)"),
    "train data name with a newline": (lambda s, m, e: ["train", "--data", str(s / "two\nlines.npz")],
                                       "two\\nlines.npz: no such file"),
    "bundle without an export": (lambda s, m, e: ["export.bundle", "--artifacts", str(s)], "manifest.json: no such manifest"),
    "bundle with a model missing": (lambda s, m, e: ["export.bundle", "--artifacts", str(copy_export(e, s, drop="model_int8.onnx"))],
                                    "model_int8.onnx: missing; run 'make export' first"),
    "bundle with a tampered model": (lambda s, m, e: ["export.bundle", "--artifacts", str(copy_export(e, s, flip="model_f32.tflite"))],
                                     "model_f32.tflite: sha256 "),
}


def copy_export(export, scratch, drop=None, flip=None):
    target = scratch / "artifacts"
    shutil.copytree(export, target, ignore=shutil.ignore_patterns("*.keras", "report"))
    if drop:
        (target / drop).unlink()
    if flip:
        data = bytearray((target / flip).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / flip).write_bytes(bytes(data))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(WORKSTATION_CASES))
def test_train_export_and_bundle_refuse_bad_input_in_one_line(case, untrained_export, mnist, tmp_path):
    setup, fragment = WORKSTATION_CASES[case]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = setup(scratch, mnist, untrained_export)
    before = snapshot(untrained_export)
    result = run_cli("-m", *argv, cwd=scratch, timeout=300)
    exit_status = 2 if "invalid" in fragment or "argument --" in fragment else 1  # a bad option: 2
    assert_one_clean_line(result, exit_status, fragment)
    assert snapshot(untrained_export) == before
    assert not list(scratch.rglob("*.partial*"))
    assert not (scratch / "out" / "manifest.json").exists()


def file_size_limit(limit_bytes):
    """A preexec_fn for subprocess: the child runs under `ulimit -f` (RLIMIT_FSIZE) of `limit_bytes`."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def run_limited(argv, limit_bytes, cwd):
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=600, preexec_fn=file_size_limit(limit_bytes))


@pytest.mark.slow
def test_export_under_a_file_size_limit_fails_in_one_line(untrained_export, tmp_path):
    result = run_limited(["export", "--model", str(untrained_export / "model.keras"), "--data",
                          str(untrained_export / "small.npz"), "--output-dir", str(tmp_path / "out")], 100 * 1024, tmp_path)
    assert_one_clean_line(result, 1, "the file size limit (ulimit -f) is 102,400 bytes, and export writes files "
                                     "of up to about")
    assert sorted(os.listdir(tmp_path / "out")) == []


# `mnist-edge samples FOLDER --out FILE`: what serve --collect kept, turned into training data.
def collected_folder(directory, labels, ids=None):
    from edge_runtime import samples

    folder = samples.SampleFolder(directory)
    rng = np.random.default_rng(0)
    for index, label in enumerate(labels):
        folder.add(samples.Sample(
            id=(ids or {}).get(index, f"{index:032x}"), time=1.7e9 + index, label=label, int8_label=label % 10,
            float_label=label % 10, seen=rng.integers(0, 256, (28, 28), dtype=np.uint8),
            class_names=tuple(str(digit) for digit in range(10))))
    return directory


def read_only(directory):
    directory.mkdir()
    directory.chmod(0o555)
    return directory


SAMPLES_OUT_CASES = {
    "out is a directory": (lambda s: (s / "taken").mkdir() or s / "taken", None,
                           "taken: is a directory; --out takes a file name, e.g. "),
    "out in a read-only folder": (lambda s: read_only(s / "locked") / "samples.npz", None,
                                  "locked/samples.npz: cannot write: Permission denied; nothing was written"),
    "out over the file size limit": (lambda s: s / "samples.npz", 4096,
                                     "samples.npz: cannot write: File too large; nothing was written"),
}


@pytest.mark.parametrize("case", sorted(SAMPLES_OUT_CASES))
def test_samples_out_that_cannot_be_written_fails_in_one_line(case, unreadable_dir):
    make_target, limit, fragment = SAMPLES_OUT_CASES[case]
    folder = collected_folder(unreadable_dir / "collected", list(range(10)) * 2)
    target = make_target(unreadable_dir)
    argv = [sys.executable, "-m", "edge_runtime", "samples", str(folder), "--out", str(target)]
    if "read-only" in case:
        # Permissions do not bind root: the command runs as `nobody` (setpriv).
        if shutil.which("setpriv") is None or os.geteuid() != 0:
            pytest.skip("needs root and setpriv to run the command as an unprivileged user")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=environment, cwd=unreadable_dir, timeout=300,
                            preexec_fn=file_size_limit(limit) if limit else None)
    assert_one_clean_line(result, 1, fragment)
    leftovers = [path.name for path in target.parent.iterdir() if path.name != "collected" and path != target]
    assert leftovers == [] and not target.is_file()


def test_samples_leaves_out_labels_outside_the_classes_and_repeated_ids(tmp_path):
    labels = [0, 1, 2, 3, 99, -1, 4, 5, 6, 7]
    folder = collected_folder(tmp_path / "collected", labels, ids={9: f"{0:032x}"})  # the last repeats the first's id
    result = run_cli("-m", "edge_runtime", "samples", str(folder), "--out", str(tmp_path / "samples.npz"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    notes = result.stderr.strip().splitlines()
    assert len(notes) == 3 and all(note.startswith("note: skipping ") for note in notes), notes
    assert "label 99 is outside the model's 10 classes (0..9)" in notes[0]
    assert "label -1 is outside the model's 10 classes (0..9)" in notes[1]
    assert f"sample id {0:032x} repeats sample-" in notes[2] and "counted once" in notes[2]
    with np.load(tmp_path / "samples.npz") as written_set:
        kept = sorted([*written_set["y_train"], *written_set["y_test"]])
    assert kept == [0, 1, 2, 3, 4, 5, 6]
    assert "7 labelled samples" in result.stdout
