"""The bundle on a device where no interpreter installs: a venv with only numpy and the wheel.

Slow: it trains (the shared `trained` fixture), builds the bundle and a fresh venv.
"""

import json
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_a_venv_with_only_numpy_and_the_wheel_reproduces_the_exported_int8_accuracy(trained, tmp_path):
    built = run_cli("-m", "export.bundle", "--artifacts", str(trained), "--output", str(tmp_path / "bundle.tar.gz"))
    assert built.returncode == 0, built.stderr[-3000:]
    with tarfile.open(tmp_path / "bundle.tar.gz") as archive:
        archive.extractall(tmp_path / "device", filter="data")
    bundle = tmp_path / "device" / "mnist-edge-bundle"
    (wheel,) = bundle.glob("mnist_edge-*.whl")

    venv = tmp_path / "numpy-only-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True,
                               text=True).stdout.lower()
    packages = {line.split("==")[0] for line in installed.split()}
    assert packages - {"pip", "setuptools", "wheel"} == {"numpy", "mnist-edge"}, packages

    # From the bundle directory, so that only the installed wheel can be imported.
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "edge_runtime", "eval", str(bundle), "--strict", "--json"],
                            capture_output=True, text=True, cwd=bundle)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)["results"]
    assert [(row["model"], row["backend"]) for row in rows] == [("model_int8.tflite", "numpy")]
    recorded = json.loads((trained / "manifest.json").read_text())["files"]["model_int8.tflite"]["test_accuracy"]
    assert rows[0]["accuracy"] == recorded and rows[0]["images"] == 10000 and rows[0]["matches_export"] is True
    assert "no interpreter runs float models" in result.stderr or "no installed interpreter runs float models" in result.stderr

    info = subprocess.run([str(venv / "bin" / "python"), "-m", "edge_runtime", "info", "model_int8.tflite"],
                          capture_output=True, text=True, cwd=bundle)
    assert info.returncode == 0 and "backend        numpy" in info.stdout, info.stderr
    bench = subprocess.run([str(venv / "bin" / "python"), "-m", "edge_runtime", "bench", "model_int8.tflite", "--json",
                            "--runs", "20"], capture_output=True, text=True, cwd=bundle)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert json.loads(bench.stdout)["backend"] == "numpy"
