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


def run_cli(*arguments, cwd=REPO_ROOT, env=None, timeout=900, python=sys.executable):
    """Run `python -m ...` in a subprocess from the repo root; return the CompletedProcess."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run(
        [python, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (uint8), fetched and verified once into the user's cache."""
    from train import data

    return data.load_dataset()
