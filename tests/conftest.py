"""Shared test fixtures: the repository root, the real MNIST cache, and running the CLIs for real."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def require(condition, reason):
    """Skip with `reason` when `condition` is false — but fail in CI, where it must hold."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (uint8), fetched and verified once into the user's cache."""
    from train import data

    return data.load_dataset()


@pytest.fixture(scope="session")
def untrained_export(tmp_path_factory, mnist):
    """Real exported files of the seed architecture, with untrained weights — seconds, not minutes.

    The export pipeline runs as it does for users, with tolerances opened wide (an untrained model
    is ~10% accurate), so every file, the manifest and a small test set are the genuine article
    for runtime, integrity and bad-input tests. Accuracy claims are tested on trained models only.
    """
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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The real thing, once per test run: train three epochs and export, through the commands users
    run (about a minute on two cores). Shared by the end-to-end and the Raspberry Pi tests; tests
    write their own outputs elsewhere and leave this directory as it is."""
    output = tmp_path_factory.mktemp("artifacts")
    trained_run = run_cli("-m", "train", "--output-dir", str(output))
    assert trained_run.returncode == 0, trained_run.stderr[-3000:]
    exported = run_cli("-m", "export", "--model", str(output / "model.keras"), "--output-dir", str(output))
    assert exported.returncode == 0, exported.stderr[-3000:]
    return output
