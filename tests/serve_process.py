"""Bundles and a real `mnist-edge serve` process for the tests (ServeProcess lives in benchmarks/http_load.py)."""

import pathlib
import shutil

import numpy as np

from benchmarks.http_load import ServeProcess  # noqa: F401  (re-exported for the tests)

BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json")


def make_bundle(artifacts, destination, test_images=None, test_labels=None):
    """Copy an export's device files into `destination` (a bundle directory); return it.

    `test_images`/`test_labels`, if given, become its mnist_test.npz; otherwise the export's own
    mnist_test.npz is copied.
    """
    destination = pathlib.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        shutil.copy(pathlib.Path(artifacts) / name, destination / name)
    if test_images is None:
        shutil.copy(pathlib.Path(artifacts) / "mnist_test.npz", destination / "mnist_test.npz")
    else:
        np.savez_compressed(destination / "mnist_test.npz", x_test=test_images, y_test=test_labels)
    return destination
