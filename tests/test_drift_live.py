"""Label-free drift on a real `mnist-edge serve` over loopback, with the trained model: MNIST test images
leave it quiet, inverted digits and Fashion-MNIST pictures (non-digits, uploaded as PNG files) move it."""

import io
import json
import pathlib
import re

import numpy as np
import pytest

from benchmarks import http_load
from conftest import require
from serve_process import ServeProcess, call_json, make_bundle

pytestmark = pytest.mark.slow  # the trained model (the session's one training run)
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
WINDOW = 300


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    return make_bundle(trained, tmp_path_factory.mktemp("drift-bundle"))


def pixels_request(image):
    return http_load.Request("POST", "/api/predict", json.dumps({"pixels": image.tolist()}).encode(),
                             (("Content-Type", "application/json"),))


def png_request(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return http_load.Request("POST", "/api/predict", buffer.getvalue(), (("Content-Type", "image/png"),))


def send(server, requests):
    responses = http_load.run("127.0.0.1", server.port, requests, clients=2)
    assert [response.status for response in responses] == [200] * len(requests), responses[0].body[:300]


def drift_figures(server):
    status, info = call_json(server, "GET", "/api/info")
    assert status == 200
    text = http_load.run("127.0.0.1", server.port, [http_load.Request("GET", "/metrics")], 1)[0].body.decode()
    exported = dict(re.findall(r"^(mnist_edge_drift_\w+) (\S+)$", text, re.MULTILINE))
    return info["live"]["drift"], {name: float(value) for name, value in exported.items()}


def fashion_pictures(count):
    import gzip

    require(FASHION_MNIST.exists(), "Debian's dataset-fashion-mnist is not installed (make system-deps)")
    with gzip.open(FASHION_MNIST) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]


def test_mnist_leaves_the_drift_quiet_inverted_and_non_digit_pictures_move_it(bundle):
    with np.load(bundle / "test_set.npz") as archive:
        digits = archive["x_test"][1000:1000 + 2 * WINDOW]
    fashion = fashion_pictures(WINDOW)
    with ServeProcess(bundle, "--drift-window", str(WINDOW), "--drift-min-images", "200",
                      "--self-check-images", "1000") as server:
        figures, exported = drift_figures(server)
        assert figures["images"] == 0 and figures["distance"] is None and not figures["drifted"]
        assert exported == {"mnist_edge_drift_threshold": 0.15, "mnist_edge_drift_window_images": 0,
                            "mnist_edge_drift_above_threshold": 0}  # no distance before any image

        send(server, [pixels_request(image) for image in digits[:WINDOW]])
        quiet, exported = drift_figures(server)
        send(server, [pixels_request(255 - image) for image in digits[:WINDOW]])  # light background, dark digit
        inverted, _ = drift_figures(server)
        send(server, [pixels_request(image) for image in digits[WINDOW:]])
        back, _ = drift_figures(server)
        send(server, [png_request(picture) for picture in fashion])
        non_digits, non_digits_exported = drift_figures(server)
        log = server.log_text()
    print(f"drift distance: MNIST {quiet['distance']:.3f}, inverted {inverted['distance']:.3f}, MNIST again "
          f"{back['distance']:.3f}, Fashion-MNIST PNGs {non_digits['distance']:.3f} (threshold 0.15, window {WINDOW})")
    assert quiet["images"] == WINDOW and quiet["enough_images"]
    assert quiet["distance"] < 0.15 and not quiet["drifted"]  # under the threshold: sampling noise and the order of the test set
    assert exported["mnist_edge_drift_distance"] == pytest.approx(quiet["distance"], abs=1e-12)
    assert exported["mnist_edge_drift_above_threshold"] == 0
    assert inverted["distance"] > 0.5 and inverted["drifted"]
    assert back["distance"] < 0.15 and not back["drifted"]
    assert non_digits["distance"] > 0.5 and non_digits["drifted"] and non_digits["seen"] == 4 * WINDOW
    assert non_digits_exported["mnist_edge_drift_above_threshold"] == 1
    # Once per crossing (a window mixing two feeds may cross the threshold more than once on its way).
    assert len(re.findall(r"warning: top-1 probability drift \S+ over the last 300 images is above 0.15", log)) >= 2
    assert len(re.findall(r"top-1 probability drift \S+ over the last 300 images is back within 0.15", log)) >= 1
