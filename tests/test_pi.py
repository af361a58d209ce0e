"""The deploy bundle on an emulated Raspberry Pi 4 and 5: `pi/check.sh`, the same as `make pi-check`.

Slow (about 7 minutes with a cached rootfs, 10 from scratch on two cores) and needs root: it builds
or reuses an arm64 Debian bookworm rootfs, installs the bundle there as the README tells users, and
checks that eval, predict and bench give the x86 results. Skipped where the machine cannot emulate
(not root, no binfmt_misc, no debootstrap), except in CI, where that is a failure.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require, run_cli

pytestmark = pytest.mark.slow


def cannot_emulate_reason():
    """None when pi/rootfs.sh says this machine can emulate an arm64 Pi, else its reason."""
    result = subprocess.run(["bash", str(REPO_ROOT / "pi" / "rootfs.sh"), "can-emulate"], capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stdout.strip() or result.stderr.strip() or "unknown reason")


@pytest.fixture(scope="module")
def trained_bundle(trained, tmp_path_factory):
    """A real deploy bundle from the session's trained export, as `make bundle` packs it."""
    reason = cannot_emulate_reason()
    require(reason is None, f"cannot emulate a Raspberry Pi here: {reason}")
    bundle = tmp_path_factory.mktemp("pi-bundle") / "mnist-edge-bundle.tar.gz"
    completed = run_cli("-m", "export.bundle", "--artifacts", str(trained), "--output", str(bundle))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return bundle


def test_bundle_on_emulated_pi4_and_pi5_matches_x86(trained_bundle, tmp_path):
    summary_path = tmp_path / "pi-summary.json"
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "pi" / "check.sh"), "--bundle", str(trained_bundle), "--python", sys.executable,
         "--summary-json", str(summary_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=2400,
    )
    print(completed.stdout)
    assert completed.returncode == 0, (completed.stdout[-4000:] + completed.stderr[-4000:])
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == []

    rows = summary["rows"]

    def row(cpu, backend, model, images=None):
        found = [r for r in rows if (r["cpu"], r["backend"], r["model"]) == (cpu, backend, model)
                 and images in (None, r["images"])]
        assert found, f"no {model} with {backend} on {cpu} ({images} images) in {rows}"
        return found[0]

    for cpu in ("cortex-a72", "cortex-a76"):
        # The int8 TFLite model through LiteRT on all 10,000 images, on a Pi 4 and a Pi 5 CPU.
        int8 = row(cpu, "litert", "model_int8.tflite", 10000)
        assert int8["accuracy"] == int8["x86_accuracy"] >= 0.98
        assert int8["top1_identical"] and int8["xnnpack"] and int8["max_difference"] <= 1
        assert int8["rss_mib"] > 0 and int8["x86_rss_mib"] > 0
        tflite_runtime = row(cpu, "tflite-runtime", "model_int8.tflite")
        assert tflite_runtime["accuracy"] == tflite_runtime["x86_accuracy"] and tflite_runtime["top1_identical"]
        assert row(cpu, "onnxruntime", "model_int8.onnx")["outputs_identical"]
    # The emulator computes integers exactly as x86 does, and predict reads real PNG photos.
    notes = "\n".join(summary["notes"])
    assert notes.count("bit-identical to x86") == 4, notes
    assert notes.count("x86: same labels") == 2, notes
    # Installed as documented: numpy 2 with LiteRT, Debian's numpy 1.24 under tflite-runtime, no TensorFlow.
    assert summary["installs"]["litert"]["numpy"].startswith("2.")
    assert summary["installs"]["tflite-runtime"]["numpy_from"] == "Debian"
    assert summary["installs"]["tflite-runtime"]["packages"]["tflite-runtime"] == "2.14.0"
