"""Where quantization error comes from: TFLite's QuantizationDebugger, layers ranked by their int8 error.

The debugger runs each quantized op beside its float counterpart, from the same (quantized) input,
and compares their outputs. Two measures per op:
- RMSE / scale: the error in units of the tensor's quantization step. Rounding alone gives up to
  about 0.29 (1/√12); well above it, precision is lost. It hides an outlier channel: one wide
  channel makes the step large, and the other channels' error small in those units.
- channel error: for each output channel, RMSE divided by that channel's own float RMS (at least
  1% of the tensor's), averaged over channels. An outlier channel that crushes the others to a
  few levels shows here.
compare --layer-errors shows both; the export's recovery ladder ranks by the channel error.
"""

import contextlib
import csv
import io
import warnings

import numpy as np

from edge_runtime import backends
from export import to_tflite

# Ops whose weights a fallback can keep in float; the others (pooling, reshape) follow their input.
LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def channel_error(float_values, quantized_values, scale, zero_point):
    """Mean over output channels of RMSE / float RMS (the channel is the last axis); 0 for silent channels."""
    with np.errstate(invalid="ignore", over="ignore"):
        reference = np.asarray(float_values, dtype=np.float64)
        # The debugger reads the float tensors back after the run, and on some images they hold
        # leftovers (values near 1e32, measured on the first image): a real activation is never a
        # thousand times the quantized tensor's whole range. NaN: the debugger's nanmean skips it.
        if not np.all(np.abs(reference) <= 1000.0 * 256.0 * float(scale)):
            return float("nan")
        dequantized = (np.asarray(quantized_values, dtype=np.float64) - zero_point) * scale
        channels = reference.shape[-1] if reference.ndim else 1
        reference, dequantized = reference.reshape(-1, channels), dequantized.reshape(-1, channels)
        rms = np.sqrt(np.mean(reference ** 2, axis=0))
        rmse = np.sqrt(np.mean((dequantized - reference) ** 2, axis=0))
        # A channel that is all but silent on this image (a logit near 0) would divide by nearly
        # nothing: its RMS counts as at least 1% of the whole tensor's.
        rms = np.maximum(rms, 0.01 * np.sqrt(np.mean(reference ** 2)))
    live = (rms > 0) & np.isfinite(rms) & np.isfinite(rmse)
    return float(np.mean(rmse[live] / rms[live])) if live.any() else 0.0


def rank_layers(keras_model, calibration_images, debug_images):
    """Run QuantizationDebugger on `debug_images`; return one dict per quantized op, worst first.

    Takes: the Keras model, the calibration images (float32 NHWC in [0, 1]) and the images to
    measure on (training images, never the test set). Each dict: op, tensor (the name
    `to_tflite.quantize_calibrated` takes to keep that op in float), layer_index (its place among
    the weighted ops, LAYER_OPS, in graph order; None for others), rmse_over_scale, channel_error,
    mean_error, max_abs_error, scale. Sorted by channel_error.
    """
    import tensorflow as tf

    def debug_dataset():
        for index in range(len(debug_images)):
            yield [debug_images[index:index + 1]]

    converter = to_tflite.quantizing_converter(keras_model, calibration_images)
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"channel_error": channel_error})
    def run():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=debug_dataset, debug_options=options)
        debugger.run()
        return debugger

    # Keras 3 prints the SavedModel signature, the quantizer its settings, TF its deprecation of
    # tf.lite.Interpreter (which the debugger itself uses): none of it is the user's business.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        debugger = backends.without_native_stderr(run)
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    weighted = 0
    for record in csv.DictReader(io.StringIO(buffer.getvalue())):  # in graph order
        scale = float(record["scale"])
        layer_index = None
        if record["op_name"] in LAYER_OPS:
            layer_index, weighted = weighted, weighted + 1
        rows.append({
            "op": record["op_name"],
            "layer_index": layer_index,
            "tensor": record["tensor_name"],
            "rmse_over_scale": float(record["mean_squared_error"]) ** 0.5 / scale if scale > 0 else float("nan"),
            "channel_error": float(record["channel_error"]),
            "mean_error": float(record["mean_error"]),
            "max_abs_error": float(record["max_abs_error"]),
            "scale": scale,
        })
    rows.sort(key=lambda row: -row["channel_error"] if np.isfinite(row["channel_error"]) else 0.0)
    return rows
