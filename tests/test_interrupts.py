"""Interrupted for real: `python -m export` and `python -m train` killed (SIGINT, SIGKILL) at many points.

The invariant checked after every kill: a reader never sees files the manifest does not describe —
either there is no manifest (and `make` knows the export must run again), or every file it lists is
there exactly as it records. Ctrl-C is taken at the next safe point (train/command.py) and ends in
one line and exit status 130, with no temporary file left (or, when it came after the last safe
point, the export finishes whole); after SIGKILL the next run sweeps the temporary files away.
Slow: about a dozen real exports of a small untrained model.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edge_runtime import manifest
from export import check_set
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
# What appears, in order, while an export runs: each is a point to kill it at.
EXPORT_MILESTONES = (".model_f32.*.partial.tflite", "model_f32.tflite", "model_int8.tflite", ".model_f32.*.partial.onnx",
                     "model_f32.onnx", "model_int8.onnx", "test_set.npz")


def start(arguments, cwd):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", *arguments], cwd=cwd, env=environment, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(directory, pattern, newer_than, process, timeout=240):
    """Wait until a file matching `pattern` appears in `directory` changed after `newer_than`; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in directory.glob(pattern):
            try:
                if path.stat().st_mtime_ns > newer_than:
                    return True
            except FileNotFoundError:
                continue
        time.sleep(0.005)
    return False


def assert_manifest_tells_the_truth(directory):
    if not (directory / "manifest.json").exists():
        return "no manifest"
    problem = check_set.check(directory)
    assert problem is None, problem
    return "whole set"


@pytest.fixture
def exported_twice(untrained_export, tmp_path):
    """An artifacts directory holding a complete export, and a second, different model to export over it."""
    import keras

    from train import model

    directory = tmp_path / "artifacts"
    directory.mkdir()
    for name in ("model.keras", "small.npz"):
        shutil.copy(untrained_export / name, directory / name)
    for name in manifest.DEFAULT_FILE_NAMES.values():
        shutil.copy(untrained_export / name, directory / name)
    shutil.copy(untrained_export / "manifest.json", directory / "manifest.json")
    # make compares the data inputs it is given with those the model was trained from (train/inputs.py):
    # recorded as make is asked below, so that only the export set decides what `make -q export` answers.
    from train import inputs

    inputs.record(directory / "data-inputs.txt", [("DATA", ""), ("LABELS", ""), ("EXTRA_DATA", "")])
    keras.utils.set_random_seed(1)
    model.build_model().save(tmp_path / "other.keras")
    return directory, tmp_path / "other.keras"


def export_arguments(directory, model_path):
    return ["export", "--model", str(model_path), "--data", str(directory / "small.npz"), "--output-dir", str(directory),
            "--calibration-size", "50", "--preparation", "digit", "--max-int8-drop", "100",
            "--float-probability-tolerance", "1"]


@pytest.mark.parametrize(("milestone", "kill"), [
    *[(name, signal.SIGKILL) for name in EXPORT_MILESTONES],
    ("model_int8.tflite", signal.SIGINT), ("model_f32.onnx", signal.SIGINT), ("test_set.npz", signal.SIGINT),
])
def test_an_interrupted_export_never_leaves_a_manifest_that_lies(exported_twice, milestone, kill):
    directory, other_model = exported_twice
    assert assert_manifest_tells_the_truth(directory) == "whole set"
    started_at = time.time_ns()
    process = start(export_arguments(directory, other_model), REPO_ROOT)
    reached = wait_for(directory, milestone, started_at, process)
    if not reached:
        process.kill()
        pytest.fail(f"the export never wrote {milestone}: {process.communicate()[1][-2000:]}")
    process.send_signal(kill)
    _, stderr = process.communicate(timeout=120)
    state = assert_manifest_tells_the_truth(directory)
    if state == "whole set":
        # The signal came after the commit point (the manifest written last): the new export is whole.
        # Ctrl-C after the last safe point lets it finish (exit 0); SIGKILL may land while it exits.
        assert process.returncode == (0 if kill == signal.SIGINT else -signal.SIGKILL), (state, process.returncode)
        recorded = manifest.read_manifest(directory / "manifest.json").document["source_model"]["sha256"]
        assert recorded == manifest.sha256_of(other_model)
        return
    if kill == signal.SIGINT:
        assert process.returncode == 130, stderr[-2000:]
        assert [line for line in stderr.splitlines() if line.strip()][-1] == "error: interrupted"
        assert "Traceback" not in stderr
        assert not list(directory.glob(".*.partial*"))
    else:
        assert process.returncode == -signal.SIGKILL
    # make sees the set as incomplete; the next export sweeps what the kill left and completes it.
    make = subprocess.run(["make", "-q", f"ARTIFACTS={directory}", "export"], cwd=REPO_ROOT, capture_output=True)
    assert make.returncode == 1
    again = start(export_arguments(directory, other_model), REPO_ROOT)
    assert again.wait(timeout=600) == 0, again.communicate()[1][-2000:]
    assert assert_manifest_tells_the_truth(directory) == "whole set"
    assert not list(directory.glob(".*.partial*"))
    recorded = manifest.read_manifest(directory / "manifest.json").document["source_model"]["sha256"]
    assert recorded == manifest.sha256_of(other_model)


@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_training_leaves_no_model_beside_a_history_not_its_own(untrained_export, tmp_path, kill):
    directory = tmp_path / "artifacts"
    directory.mkdir()
    shutil.copy(untrained_export / "model.keras", directory / "model.keras")  # the "old" model
    arguments = ["train", "--data", str(untrained_export / "small.npz"), "--output-dir", str(directory), "--epochs", "1"]
    started_at = time.time_ns()
    process = start(arguments, REPO_ROOT)
    assert wait_for(directory, "history.json", started_at, process), process.communicate()[1][-2000:]
    process.send_signal(kill)
    _, stderr = process.communicate(timeout=120)
    model = directory / "model.keras"
    history_written = (directory / "history.json").stat().st_mtime_ns
    # Either the old model is gone (the run was cut before its own model), or the model is this run's.
    assert not model.exists() or model.stat().st_mtime_ns >= history_written
    if kill == signal.SIGINT and process.returncode != 0:
        assert process.returncode == 130 and "Traceback" not in stderr
        assert not list(directory.glob(".*.partial*"))
