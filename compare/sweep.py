"""`--sweep`: export int8 models over calibration settings and measure each, to choose on evidence."""

import pathlib
import tempfile

import numpy as np

from compare import runs
from edge_runtime import backends, classifier, manifest as manifest_module, preprocessing, statistics
from export import calibration, pipeline, to_onnx, to_tflite

SIZE_FACTORS = (1 / 3, 1, 10 / 3)  # around the export's own calibration size (300: 100, 300, 1000)


def run_sweep(artifacts_dir, manifest, dataset, reference_labels, methods=to_onnx.CALIBRATION_METHODS,
              progress=print):
    """Return one row per (format, calibration size, method) with accuracy against the float model.

    Takes: the artifacts directory, its Manifest (the Keras model, the float ONNX file, and the
    export's calibration size and seed, around which the sweep varies), the Dataset, and the float
    model's test predictions. Calibration images are stratified draws from the training set.
    """
    import keras

    artifacts_dir = pathlib.Path(artifacts_dir)
    seed = manifest.calibration["seed"]
    exported_size = manifest.calibration["images"]
    sizes = sorted({max(1, min(len(dataset.y_train), round(exported_size * factor))) for factor in SIZE_FACTORS})
    float_onnx = next(name for name in manifest.files_with_role(manifest_module.ROLE_FLOAT_MODEL) if name.endswith(".onnx"))
    labels = dataset.y_test.astype(np.int64)
    reference_correct = reference_labels == labels
    test_input = preprocessing.to_model_input(dataset.x_test, manifest.input_shape)
    keras_model, _ = pipeline.as_probabilities(
        keras.models.load_model(runs.source_model_path(artifacts_dir, manifest)), test_input[:64])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        for size in sizes:
            images = calibration.calibration_images(dataset.x_train, dataset.y_train, size, seed, manifest.input_shape)
            candidates = [("tflite", "—", scratch / f"int8_{size}.tflite")]
            candidates[0][2].write_bytes(to_tflite.convert_int8(keras_model, images))
            for method in methods:
                path = scratch / f"int8_{size}_{method}.onnx"
                to_onnx.quantize_int8(artifacts_dir / float_onnx, path, images, method)
                candidates.append(("onnx", method, path))
            for file_format, method, path in candidates:
                predicted = classifier.Classifier(backends.open_backend(path)).predict(test_input).labels
                comparison = statistics.paired_comparison(reference_correct, predicted == labels)
                rows.append({
                    "format": file_format,
                    "calibration_images": size,
                    "method": method,
                    "accuracy": comparison["candidate_accuracy"],
                    "change_points": comparison["difference_points"],
                    "change_ci_points": [comparison["ci_low_points"], comparison["ci_high_points"]],
                    "agreement_with_float": float(np.mean(predicted == reference_labels)),
                })
                progress(f"  {file_format:<6} {size:>5} images  {method:<10} {100 * comparison['candidate_accuracy']:.2f}%")
    return rows


def markdown(rows):
    lines = [
        "## Calibration sweep",
        "Each int8 model re-exported with the given calibration (stratified training images, the export's seed) "
        "and measured on the full test set against the float model.",
        "",
        "| format | calibration images | ONNX method | accuracy | change vs float (95% CI) | agreement |",
        "|---|---:|---|---:|---|---:|",
    ]
    for row in rows:
        low, high = row["change_ci_points"]
        lines.append(f"| {row['format']} | {row['calibration_images']} | {row['method']} | {100 * row['accuracy']:.2f}% "
                     f"| {row['change_points']:+.2f} pt [{low:+.2f}, {high:+.2f}] | {100 * row['agreement_with_float']:.2f}% |")
    return "\n".join(lines)
