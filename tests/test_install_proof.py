"""The three outcomes of `mnist-edge install` with trained models, a real `serve` on loopback, and
real requests (the test images) during probation:

1. the trained export switches and passes probation;
2. the trained export with an untrained int8 model in it is refused at the gate, with eval's line;
3. an export whose int8 model collapsed (an outlier channel: conv1's channel 0 scaled by 1000, conv2's
   matching input divided by 1000, which leaves the float model exactly as accurate) but whose
   export gate was opened wide (--max-int8-drop 95) passes the gate, then serve's live int8-float
   agreement falls below its threshold during probation and the install rolls back.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from test_install import (WINDOW, Device, build_signed_bundle, dependencies, feed, identity_of,  # noqa: F401
                          keys)

OUTLIER_SCALE = 1000.0
pytestmark = pytest.mark.slow  # trains (the shared `trained` fixture) and exports twice more


def outlier_model(model_path, output_path, scale):
    """Save the Keras model at `model_path` with conv1's output channel 0 multiplied by `scale` and
    conv2's weights reading it divided by `scale`: the same function (ReLU and max pooling commute
    with a positive scale), one activation range `scale` times wider."""
    import keras

    model = keras.models.load_model(model_path)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    first_kernel, first_bias = convolutions[0].get_weights()
    first_kernel[..., 0] *= scale
    first_bias[0] *= scale
    convolutions[0].set_weights([first_kernel, first_bias])
    second_kernel, second_bias = convolutions[1].get_weights()
    second_kernel[:, :, 0, :] /= scale
    convolutions[1].set_weights([second_kernel, second_bias])
    model.save(output_path)
    return output_path


@pytest.fixture(scope="module")
def proof_bundles(trained, untrained_export, tmp_path_factory, keys):
    from edge_runtime import manifest

    good = build_signed_bundle(trained, tmp_path_factory.mktemp("good"), keys)

    def untrained_int8(document):
        document["created"] = "2027-01-01T00:00:00+00:00"

    swapped = tmp_path_factory.mktemp("swapped-export")
    for name in ("manifest.json", "model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "model_f32.onnx",
                 "test_set.npz"):
        shutil.copy(trained / name, swapped / name)
    shutil.copy(untrained_export / "model_int8.tflite", swapped / "model_int8.tflite")
    document = json.loads((swapped / "manifest.json").read_text())
    document["files"]["model_int8.tflite"].update(sha256=manifest.sha256_of(swapped / "model_int8.tflite"),
                                                  bytes=(swapped / "model_int8.tflite").stat().st_size)
    (swapped / "manifest.json").write_text(json.dumps(document, indent=2))
    gate_fails = build_signed_bundle(swapped, tmp_path_factory.mktemp("gate-fails"), keys, manifest_changes=[untrained_int8])

    outlier = tmp_path_factory.mktemp("outlier-export")
    outlier_model(trained / "model.keras", outlier / "model.keras", OUTLIER_SCALE)
    exported = run_cli("-m", "export", "--model", str(outlier / "model.keras"), "--output-dir", str(outlier),
                       "--max-int8-drop", "95")
    assert exported.returncode == 0, exported.stderr[-2000:]
    outlier_manifest = json.loads((outlier / "manifest.json").read_text())
    # The float model is as good as the trained one; its int8 model is not.
    assert outlier_manifest["files"]["model_f32.tflite"]["test_accuracy"] > 0.98
    assert outlier_manifest["files"]["model_int8.tflite"]["test_accuracy"] < 0.5
    falls_live = build_signed_bundle(outlier, tmp_path_factory.mktemp("falls-live"), keys)
    return {"good": good, "gate_fails": gate_fails, "falls_live": falls_live}


@pytest.fixture
def device(tmp_path, keys, dependencies):  # noqa: F811
    made = Device(tmp_path, keys, dependencies)
    yield made
    made.stop_service()


def test_three_outcomes_switch_gate_refusal_and_rollback_on_live_agreement(device, proof_bundles, trained):
    with np.load(trained / "test_set.npz") as archive:
        requests = archive["x_test"][:WINDOW + 10]
    good, falls_live = identity_of(proof_bundles["good"]), identity_of(proof_bundles["falls_live"])

    installing = device.start_install(proof_bundles["good"])
    good_sha256 = device.serving()["sha256"]
    feed(device, requests)
    _, log = installing.communicate(timeout=300)
    print(log)
    assert installing.returncode == 0, log
    assert f"installed {good}: ready for" in log and f"over the last {WINDOW} shadowed requests" in log

    refused = device.install(proof_bundles["gate_fails"])
    print(refused.stderr)
    assert refused.returncode == 3, refused.stderr
    line = [line for line in refused.stderr.splitlines() if "refused at the gate" in line]
    assert len(line) == 1 and "FAILED: model_int8.tflite: accuracy" in line[0]
    assert "below the float model's 98." in line[0] and os.readlink(device.root / "current") == f"versions/{good}"

    old_service = device.service_pid()
    installing = device.start_install(proof_bundles["falls_live"])
    info = device.serving(replacing=old_service, timeout=300)
    assert info is not None and info["sha256"] != good_sha256
    falls_live_service = device.service_pid()
    feed(device, requests)
    _, log = installing.communicate(timeout=300)
    print(log)
    assert installing.returncode == 4, log
    rolled = [line for line in log.splitlines() if "rolled back to" in line]
    assert len(rolled) == 1 and rolled[0].startswith(f"mnist-edge install: rolled back to {good}: int8-float agreement ")
    assert f"over the last {WINDOW} shadowed requests is below serve's threshold 99.00%" in rolled[0]
    assert os.readlink(device.root / "current") == f"versions/{good}"
    status = subprocess.run([sys.executable, "-m", "edge_runtime", "status", "--root", str(device.root)],
                            env=device.environment, capture_output=True, text=True, timeout=60)
    print(status.stdout)
    assert f"* {good}" in status.stdout and f"last     rolled-back: {falls_live}" in status.stdout
    # The service was restarted on the good version.
    assert device.serving(replacing=falls_live_service)["sha256"] == good_sha256
