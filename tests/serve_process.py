"""Bundles and a real `mnist-edge serve` process for the tests (ServeProcess lives in benchmarks/http_load.py)."""

import json
import pathlib
import shutil

import numpy as np

from benchmarks.http_load import ServeProcess  # noqa: F401  (re-exported for the tests)

BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json")


def make_bundle(artifacts, destination, test_images=None, test_labels=None):
    """Copy an export's device files into `destination` (a bundle directory); return it.

    `test_images`/`test_labels`, if given, become its test_set.npz, and the manifest's entry for it
    is rewritten to describe them (as a new export would); otherwise the export's own is copied.
    """
    from edge_runtime import manifest

    destination = pathlib.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*BUNDLE_FILES, "test_set.npz"):
        shutil.copy(pathlib.Path(artifacts) / name, destination / name)
    if test_images is not None:
        np.savez_compressed(destination / "test_set.npz", x_test=test_images, y_test=test_labels)
        document = json.loads((destination / "manifest.json").read_text())
        document["files"]["test_set.npz"].update(sha256=manifest.sha256_of(destination / "test_set.npz"),
                                                 bytes=(destination / "test_set.npz").stat().st_size,
                                                 images=len(test_labels))
        (destination / "manifest.json").write_text(json.dumps(document, indent=2))
    return destination


def call_json(server, method, path, document=None, body=None, headers=None, token=None):
    """One request on a fresh connection, `document` sent as JSON; return (status, decoded JSON answer)."""
    import http.client

    headers = dict(headers or {})
    if document is not None:
        body = json.dumps(document).encode()
        headers.setdefault("Content-Type", "application/json")
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
