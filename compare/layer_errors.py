"""Where quantization error comes from: TFLite's quantization debugger, layers ranked by error.

The debugger runs the float and the quantized graph side by side and compares each quantized
op's output with its float counterpart. Error is reported as RMSE divided by the layer's
quantization scale: rounding alone gives up to about 0.29 (1/√12, less where many values are exact zeros); layers well
above it are where precision is lost.
"""

import contextlib
import csv
import io

from compare import runs
from export import calibration, pipeline, to_tflite

DEBUG_IMAGES = 200


def tflite_layer_errors(artifacts_dir, manifest, dataset):
    """Return layers ranked by RMSE / scale, worst first (a list of dicts).

    The int8 graph is re-converted with the export's own calibration (size and seed from `manifest`).
    """
    import keras
    import tensorflow as tf

    size, seed, shape = manifest.calibration["images"], manifest.calibration["seed"], manifest.input_shape
    calibration_images = calibration.calibration_images(dataset.x_train, dataset.y_train, size, seed, shape)
    debug_count = min(DEBUG_IMAGES, len(dataset.y_train))
    debug_images = calibration.calibration_images(dataset.x_train, dataset.y_train, debug_count, seed + 1, shape)
    keras_model, _ = pipeline.as_probabilities(
        keras.models.load_model(runs.source_model_path(artifacts_dir, manifest)),
        calibration_images[:64])

    def debug_dataset():
        for index in range(len(debug_images)):
            yield [debug_images[index:index + 1]]

    converter = to_tflite.quantizing_converter(keras_model, calibration_images)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras 3 prints the SavedModel signature
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    for record in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(record["scale"])
        mean_squared_error = float(record["mean_squared_error"])
        rows.append({
            "op": record["op_name"],
            "tensor": record["tensor_name"],
            "rmse_over_scale": (mean_squared_error ** 0.5) / scale if scale > 0 else float("nan"),
            "mean_error": float(record["mean_error"]),
            "max_abs_error": float(record["max_abs_error"]),
            "scale": scale,
        })
    rows.sort(key=lambda row: -row["rmse_over_scale"] if row["rmse_over_scale"] == row["rmse_over_scale"] else 0)
    return rows


def markdown(rows):
    lines = [
        "## Quantization error by layer (TFLite)",
        "RMSE of each quantized op's output against the float graph, in units of that tensor's "
        "quantization step; rounding alone gives up to about 0.29 (1/√12); well above it, precision is lost. Worst first.",
        "",
        "| op | tensor | RMSE / scale | largest abs. error | mean error |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        tensor = row["tensor"].split(";")[0]  # the converter joins fused ops' names with ';'
        lines.append(f"| {row['op']} | `{tensor}` | {row['rmse_over_scale']:.3f} | {row['max_abs_error']:.4f} | {row['mean_error']:+.5f} |")
    return "\n".join(lines)
