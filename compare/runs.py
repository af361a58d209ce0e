"""Run every model through every installed runtime that can run it, on the same test images.

Rows are (model file × runtime): Keras for model.keras; LiteRT, tflite-runtime and TensorFlow Lite
for the .tflite files; onnxruntime for the .onnx files. Each run goes through `edge_runtime`, so the
preprocessing is the device's own; only Keras runs natively, as the float reference.
"""

import dataclasses
import pathlib
import sys

import numpy as np

from edge_runtime import backends, classifier, errors, manifest as manifest_module, preprocessing
from edge_runtime.cli import benchmarking


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


def runtimes_for(path, precision):
    """The installed runtimes that can run the model file at `path`, in preference order.

    The numpy engine runs quantized models only (int8, mixed, 16x8), so float models skip it.
    """
    installed = set(backends.available_backends())
    return [name for name in backends.interpreters_for(path)
            if name in installed and not (precision not in manifest_module.QUANTIZED_PRECISIONS and name in backends.INT8_ONLY_BACKENDS)]


def measure_speed(run_once, model_input, batch_size=256):
    """Return (p50 latency of one image in ms, best images per second at `batch_size`)."""
    p50 = benchmarking.latency(run_once, model_input[:1])["p50"]
    return p50, benchmarking.throughput(run_once, model_input, batch_size=batch_size, repeats=2)


def keras_run(path, test_images, input_shape, measure=True):
    """Run the Keras float model at `path` on `test_images` (uint8); return a Run."""
    import keras

    from export import pipeline

    path = pathlib.Path(path)
    model_input = preprocessing.to_model_input(test_images, input_shape)
    model, _ = pipeline.as_probabilities(keras.models.load_model(path), model_input[:64])
    probabilities = model.predict(model_input, batch_size=1000, verbose=0)
    run = Run(path.name, "keras", "float32", path.stat().st_size, probabilities, probabilities)
    if measure:
        run.latency_p50_ms, run.throughput_images_per_s = measure_speed(model.predict_on_batch, model_input)
        run.peak_rss_mib = peak_rss_or_nan([sys.executable, "-m", "compare.keras_cold_start", str(path)], path)
    return run


def images_counter(total, progress, every_seconds=10.0):
    """A `progress` callback for Classifier.predict that says how far it is ("        4,096/10,000 images"),
    at most once every `every_seconds`: quiet for a fast run, a sign of life in a slow one (the numpy engine)."""
    import time

    last = [time.monotonic()]

    def report(done):
        if time.monotonic() - last[0] >= every_seconds and done < total:
            last[0] = time.monotonic()
            progress(f"        {done:,}/{total:,} images")

    return report


def runtime_run(path, runtime, precision, test_images, measure=True, progress=print):
    """Run the exported model at `path` in `runtime` through edge_runtime; return a Run."""
    model = classifier.Classifier.load(path, backend=runtime, threads=1)
    model_input = preprocessing.to_model_input(test_images, model.input_shape)
    predictions = model.predict(model_input, progress=images_counter(len(model_input), progress))
    run = Run(path.name, runtime, precision, path.stat().st_size, predictions.probabilities, predictions.raw)
    if measure:
        progress("        measuring latency, throughput and memory")
        run.latency_p50_ms, run.throughput_images_per_s = measure_speed(model.run_raw, model_input)
        run.peak_rss_mib = benchmarking.cold_start(path, runtime, threads=1)[1]
    return run


def peak_rss_or_nan(command, what):
    """Peak RSS in MiB of `command` (a cold-start program, see edge_runtime.cli.cold_start); NaN, shown as a dash, if it fails."""
    try:
        return benchmarking.child_peak_rss(command, what)[1]
    except errors.EdgeRuntimeError:
        return float("nan")


def source_model_path(artifacts_dir, manifest):
    """The Keras model the export came from: beside the exports, else where the export read it.

    Raises: ModelFileError when neither exists or the file is not the one exported (sha256).
    """
    source = manifest.document["source_model"]
    candidates = [pathlib.Path(artifacts_dir) / source["file"]] + ([pathlib.Path(source["path"])] if "path" in source else [])
    for candidate in candidates:
        if candidate.is_file():
            if manifest_module.sha256_of(candidate) != source.get("sha256"):
                raise errors.ModelFileError(f"{candidate}: not the Keras model these files were exported from "
                                            "(sha256 differs); re-export")
            return candidate
    raise errors.ModelFileError(f"{candidates[0]}: the Keras model the export came from is missing")


def all_runs(artifacts_dir, manifest, test_images, measure=True, progress=print):
    """Keras first, then every model file the manifest lists, in every installed runtime that can run it.

    `progress` gets a line as each run starts ("[2/9] model_int8.tflite (litert)") and as it ends.
    """
    import time

    artifacts_dir = pathlib.Path(artifacts_dir)
    keras_path = source_model_path(artifacts_dir, manifest)
    planned = [(keras_path, "keras", None)]
    for name, entry in manifest.files.items():
        if entry.role in manifest_module.MODEL_ROLES:
            path = artifacts_dir / name
            planned += [(path, runtime, entry.precision) for runtime in runtimes_for(path, entry.precision)]
    runs = []
    for number, (path, runtime, precision) in enumerate(planned, start=1):
        progress(f"  [{number}/{len(planned)}] {path.name} ({runtime}){', with speed and memory' if measure else ''}")
        started = time.perf_counter()
        if runtime == "keras":
            runs.append(keras_run(path, test_images, manifest.input_shape, measure))
        else:
            runs.append(runtime_run(path, runtime, precision, test_images, measure, progress))
        progress(f"        done in {time.perf_counter() - started:.1f} s")
    return runs
