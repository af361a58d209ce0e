"""Shared test fixtures: the checked-in bundle, the real MNIST cache and exports, and running the CLIs for real.

The device tests (runtime, engine, pictures, serve) read the small trained bundle checked in under
tests/fixtures/bundle/, so they run in a venv holding only the device dependencies and pytest
(`make test-device`). Tests that need more say so with `require_tensorflow` or `require_onnxruntime`.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import typing

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE_BUNDLE = REPO_ROOT / "tests" / "fixtures" / "bundle"
# Set by `make test-device`: a run in the device venv, where TensorFlow is absent on purpose (also in CI).
DEVICE_RUN = "MNIST_EDGE_DEVICE_TESTS"


def require(condition, reason):
    """Skip with `reason` when `condition` is false — but fail in CI, where it must hold."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_module(module, what, where):
    """Skip, saying `what` needs `module` from `where`, when it is not installed.

    In CI every venv has what its run needs, so there a missing module fails, as `require` does;
    only the device run (`make test-device`, which sets MNIST_EDGE_DEVICE_TESTS) skips.
    """
    if importlib.util.find_spec(module) is not None:
        return
    reason = f"{what} needs {module} ({where}), which is not installed here"
    if os.environ.get("CI") and not os.environ.get(DEVICE_RUN):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_tensorflow(what):
    """Skip, saying `what` needs TensorFlow, in a venv without it (the device venv)."""
    require_module("tensorflow", what, "the workstation venv")


def require_onnxruntime(what):
    """Skip, saying `what` needs onnxruntime, in a venv without it (the device venv holds the edge extra)."""
    require_module("onnxruntime", what, "pip install 'mnist-edge[onnx]'")


def run_cli(*arguments, cwd=REPO_ROOT, env=None, timeout=900, python=sys.executable, stdin_bytes=None):
    """Run `python -m ...` in a subprocess from the repo root; return the CompletedProcess.

    `stdin_bytes`, if given, is the process's standard input (stdout and stderr are still text).
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    if stdin_bytes is not None:
        result = subprocess.run([python, *arguments], cwd=cwd, env=environment, capture_output=True,
                                input=stdin_bytes, timeout=timeout)
        result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
        return result
    return subprocess.run(
        [python, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


class FixtureDigits(typing.NamedTuple):
    """The checked-in bundle's test images, x_test (N, 28, 28) uint8 and y_test (N,) int64."""

    x_test: np.ndarray
    y_test: np.ndarray


def file_digests(directory):
    from edge_runtime import manifest

    return {path.name: manifest.sha256_of(path) for path in sorted(directory.iterdir()) if path.is_file()}


@pytest.fixture(scope="session")
def fixture_bundle():
    """The small trained bundle under tests/fixtures/bundle/ (read-only: copy it to change it).

    Made by a real export of a trained seed model (tests/fixtures/regenerate.py says how), with a
    test set of a few hundred MNIST test images. A test that changes a file of it is an error at the
    end of the session, so that the next run does not test against a changed fixture.
    """
    before = file_digests(FIXTURE_BUNDLE)
    yield FIXTURE_BUNDLE
    changed = sorted(name for name, digest in file_digests(FIXTURE_BUNDLE).items() if before.get(name) != digest)
    assert not changed, f"a test changed the checked-in fixture: {changed}; git checkout tests/fixtures"


@pytest.fixture(scope="session")
def digits(fixture_bundle):
    """The fixture bundle's test images: real MNIST digits (the first 300 of the test set, then more)."""
    with np.load(fixture_bundle / "test_set.npz") as archive:
        return FixtureDigits(archive["x_test"], archive["y_test"].astype(np.int64))


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (uint8), fetched and verified once into the user's cache."""
    from train import data

    return data.load_dataset()


@pytest.fixture(scope="session")
def untrained_export(tmp_path_factory, mnist):
    """Real exported files of the seed architecture, with untrained weights — seconds, not minutes.

    The export pipeline runs as it does for users, with tolerances opened wide (an untrained model
    is ~10% accurate), so every file, the manifest and a small test set (small.npz, 2,000 training
    and 500 test images) are the genuine article for the workstation's tests: interrupted exports,
    the compare gate, retraining. The device tests read `fixture_bundle` instead.
    """
    require_tensorflow("a real export")
    import keras

    from export import pipeline, validation
    from train import data, model

    directory = tmp_path_factory.mktemp("untrained")
    keras.utils.set_random_seed(0)
    model.build_model().save(directory / "model.keras")
    small = data.Dataset(mnist.x_train[:2000], mnist.y_train[:2000], mnist.x_test[:500], mnist.y_test[:500])
    data.save_npz(small, directory / "small.npz")
    pipeline.run_export(pipeline.ExportConfig(
        model_path=directory / "model.keras", output_dir=directory, data_source=directory / "small.npz",
        calibration_size=100, preparation="digit",
        tolerances=validation.Tolerances(float_min_agreement=0.0, float_max_probability_difference=1.0,
                                         int8_max_accuracy_drop_points=100.0),
    ))
    return directory


# What `make` gives the stages (the tests' own runs use 3): the logs of runs with it are a user's logs.
MAKE_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="session")
def training_run(tmp_path_factory):
    """The real thing, once per test run: train three epochs and export, through the commands users
    run, in make's environment (about a minute on two cores). Returns (artifacts directory,
    {"train": log, "export": log}), each log the stdout then stderr a file would hold."""
    require_tensorflow("training")
    output = tmp_path_factory.mktemp("artifacts")
    trained_run = run_cli("-m", "train", "--output-dir", str(output), env=MAKE_ENVIRONMENT)
    assert trained_run.returncode == 0, trained_run.stderr[-3000:]
    exported = run_cli("-m", "export", "--model", str(output / "model.keras"), "--output-dir", str(output),
                       env=MAKE_ENVIRONMENT)
    assert exported.returncode == 0, exported.stderr[-3000:]
    return output, {"train": trained_run.stdout + trained_run.stderr, "export": exported.stdout + exported.stderr}


@pytest.fixture(scope="session")
def trained(training_run):
    """The trained and exported artifacts directory. Shared by the end-to-end and the Raspberry Pi
    tests; tests write their own outputs elsewhere and leave this directory as it is."""
    return training_run[0]
