"""Where quantization error comes from: TFLite's quantization debugger, layers ranked by error.

The ranking itself is export.sensitivity's (the recovery ladder uses the same): RMSE / scale per
op, and the channel error that shows an outlier channel. This module re-runs it for the report.
"""

from compare import runs
from export import calibration, pipeline, sensitivity

DEBUG_IMAGES = 200


def tflite_layer_errors(artifacts_dir, manifest, dataset):
    """Return layers ranked worst first (a list of dicts, see sensitivity.rank_layers).

    The int8 graph is re-converted with the export's own calibration (size and seed from `manifest`).
    """
    import keras

    size, seed, shape = manifest.calibration["images"], manifest.calibration["seed"], manifest.input_shape
    calibration_images = calibration.calibration_images(dataset.x_train, dataset.y_train, size, seed, shape)
    debug_count = min(DEBUG_IMAGES, len(dataset.y_train))
    debug_images = calibration.calibration_images(dataset.x_train, dataset.y_train, debug_count, seed + 1, shape)
    keras_model, _ = pipeline.as_probabilities(
        keras.models.load_model(runs.source_model_path(artifacts_dir, manifest)),
        calibration_images[:64])
    return sensitivity.rank_layers(keras_model, calibration_images, debug_images)


def markdown(rows):
    lines = [
        "## Quantization error by layer (TFLite)",
        "RMSE of each quantized op's output against the float graph, in units of that tensor's "
        "quantization step; rounding alone gives up to about 0.29 (1/√12); well above it, precision is lost. "
        "Channel error: each output channel's RMSE over its own float RMS, averaged over channels (an outlier "
        "channel that crushes the others shows here, not in RMSE / scale). Worst first by channel error.",
        "",
        "| op | tensor | channel error | RMSE / scale | largest abs. error | mean error |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        tensor = row["tensor"].split(";")[0]  # the converter joins fused ops' names with ';'
        lines.append(f"| {row['op']} | `{tensor}` | {row['channel_error']:.3f} | {row['rmse_over_scale']:.3f} | "
                     f"{row['max_abs_error']:.4f} | {row['mean_error']:+.5f} |")
    return "\n".join(lines)
