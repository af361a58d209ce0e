"""Run every model through every installed runtime that can run it, on the same test images.

Rows are (model file × runtime): Keras for model.keras; LiteRT, tflite-runtime and TensorFlow Lite
for the .tflite files; onnxruntime for the .onnx files. Each run goes through `edge_runtime`, so the
preprocessing is the device's own; only Keras runs natively, as the float reference.
"""

import dataclasses
import pathlib
import sys

import numpy as np

from edge_runtime import backends, benchmarking, classifier, errors, preprocessing

MODEL_FILES = ("model_f32.tflite", "model_int8.tflite", "model_f32.onnx", "model_int8.onnx")
KERAS_FILE = "model.keras"

# A fresh process that loads the Keras model and predicts once, for its peak memory.
KERAS_COLD_START = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0)
""" + benchmarking.PEAK_RSS_CODE


@dataclasses.dataclass
class Run:
    """One model in one runtime: what it predicted on the test set and what it cost."""

    model: str
    runtime: str
    precision: str
    size_bytes: int
    probabilities: np.ndarray = dataclasses.field(repr=False)
    raw_outputs: np.ndarray = dataclasses.field(repr=False)
    latency_p50_ms: float = float("nan")
    throughput_images_per_s: float = float("nan")
    peak_rss_mib: float = float("nan")

    @property
    def labels(self):
        return self.probabilities.argmax(axis=1)

    @property
    def name(self):
        return f"{self.model} ({self.runtime})"


def runtimes_for(path):
    """The installed runtimes that can run the model file at `path`, in preference order."""
    installed = set(backends.available_backends())
    candidates = backends.TFLITE_INTERPRETERS if path.suffix == ".tflite" else backends.ONNX_RUNTIMES
    return [name for name in candidates if name in installed]


def measure_speed(run_once, model_input, batch_size=256):
    """Return (p50 latency of one image in ms, best images per second at `batch_size`)."""
    p50 = benchmarking.latency(run_once, model_input[:1])["p50"]
    return p50, benchmarking.throughput(run_once, model_input, batch_size=batch_size, repeats=2)


def keras_run(artifacts_dir, test_images, measure=True):
    """Run the Keras float model on `test_images` (uint8 (N, 28, 28)); return a Run."""
    import keras

    path = pathlib.Path(artifacts_dir) / KERAS_FILE
    model = keras.models.load_model(path)
    model_input = preprocessing.to_model_input(test_images)
    probabilities = model.predict(model_input, batch_size=1000, verbose=0)
    run = Run(KERAS_FILE, "keras", "float32", path.stat().st_size, probabilities, probabilities)
    if measure:
        run.latency_p50_ms, run.throughput_images_per_s = measure_speed(model.predict_on_batch, model_input)
        run.peak_rss_mib = peak_rss_or_nan([sys.executable, "-c", KERAS_COLD_START, str(path)], path)
    return run


def runtime_run(path, runtime, test_images, measure=True):
    """Run the exported model at `path` in `runtime` through edge_runtime; return a Run."""
    model = classifier.Classifier.load(path, backend=runtime, threads=1)
    model_input = preprocessing.to_model_input(test_images)
    raw = model.predict_raw(model_input)
    probabilities = model.probabilities_from_raw(raw)
    precision = "int8" if "int8" in path.name else "float32"
    run = Run(path.name, runtime, precision, path.stat().st_size, probabilities, raw)
    if measure:
        run.latency_p50_ms, run.throughput_images_per_s = measure_speed(model.run_raw, model_input)
        run.peak_rss_mib = benchmarking.cold_start(path, runtime, threads=1)[1]
    return run


def peak_rss_or_nan(command, what):
    """Peak RSS in MiB of `command` (a program ending in PEAK_RSS_CODE); NaN, reported as a dash, if it fails."""
    try:
        return benchmarking.child_peak_rss(command, what)[1]
    except errors.EdgeRuntimeError:
        return float("nan")


def all_runs(artifacts_dir, test_images, measure=True, progress=print):
    """Keras first, then every exported file in every runtime that can run it."""
    artifacts_dir = pathlib.Path(artifacts_dir)
    progress(f"  {KERAS_FILE} (keras)")
    runs = [keras_run(artifacts_dir, test_images, measure)]
    for name in MODEL_FILES:
        path = artifacts_dir / name
        if not path.is_file():
            progress(f"  {name}: missing, skipped")
            continue
        for runtime in runtimes_for(path):
            progress(f"  {name} ({runtime})")
            runs.append(runtime_run(path, runtime, test_images, measure))
    return runs
