"""TFLite export: a float32 reference model, a full-integer int8 model (int8 input and output), and the
recovery ladder's other precisions: int8 with some layers kept in float (mixed), and 16x8 (int16
activations, int8 weights, int16 input and output)."""

import contextlib
import io
import re
import warnings

from edge_runtime import backends


def convert_float(keras_model):
    """Return the float32 TFLite flatbuffer (bytes) of `keras_model`."""
    import tensorflow as tf

    return run_converter(tf.lite.TFLiteConverter.from_keras_model(keras_model))


def convert_int8(keras_model, calibration_images):
    """Return a full-integer int8 TFLite flatbuffer (bytes), calibrated on `calibration_images`.

    Every op runs in int8 (TFLITE_BUILTINS_INT8, so conversion fails rather than leaving a float
    op behind) and the input and output are int8 too, which is what integer-only accelerators and
    the smallest CPUs want. Takes float32 (N, H, W, C) calibration images in [0, 1].
    """
    import tensorflow as tf

    converter = quantizing_converter(keras_model, calibration_images)
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return run_converter(converter)


def convert_16x8(keras_model, calibration_images):
    """Return a 16x8 TFLite flatbuffer (bytes): int16 activations, int8 weights, int64 bias, int16 I/O.

    Every op runs in 16x8 (conversion fails rather than leaving a float op behind).
    """
    import tensorflow as tf

    converter = quantizing_converter(keras_model, calibration_images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = tf.int16
    converter.inference_output_type = tf.int16
    return run_converter(converter)


def calibrate(keras_model, calibration_images):
    """Return the float TFLite model with the activation ranges seen on `calibration_images` (bytes).

    The step before quantization, kept apart so that several quantized variants (all int8, some
    layers in float) come from one calibration.
    """
    converter = quantizing_converter(keras_model, calibration_images)
    converter._experimental_calibrate_only = True  # the switch QuantizationDebugger itself uses
    return run_converter(converter)


def quantize_calibrated(calibrated_model, float_nodes=()):
    """Return an int8 flatbuffer (int8 I/O) from `calibrate`'s output, keeping the ops that produce
    `float_nodes` (output tensor names, as QuantizationDebugger reports them) in float.

    The same quantizer as convert_int8 (the converter's MLIR quantizer with int8 input and output):
    with no float nodes the result is the plain int8 model.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return backends.without_native_stderr(lambda: convert.mlir_quantize(
            calibrated_model, input_data_type=tf.int8, output_data_type=tf.int8,
            denylisted_nodes=list(float_nodes) or None))


def quantizing_converter(keras_model, calibration_images):
    """A TFLite converter set up for int8 ops calibrated on `calibration_images` (float I/O as yet)."""
    import tensorflow as tf

    def representative_dataset():
        for index in range(len(calibration_images)):
            yield [calibration_images[index : index + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def run_converter(converter):
    """Convert, keeping the converter's own noise out of the user's terminal.

    Keras 3 prints a full SavedModel signature listing on every conversion, and TF warns about
    input statistics that full-integer conversion with a representative dataset does not need.
    """
    from tensorflow.lite.python import convert_phase

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            # The converter's own C++ lines ("fully_quantize: 0, ...") stay out of the user's stderr.
            return backends.without_native_stderr(converter.convert)
        except convert_phase.ConverterError as error:
            raise UnsupportedOpError(f"TFLite conversion failed: {unsupported_ops(str(error))}") from None


class UnsupportedOpError(ValueError):
    """The converter cannot turn an op of the model into TFLite (int8) ops."""


def unsupported_ops(message):
    """One line out of the converter's many: the ops it names, or its first line."""
    ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+|tfl\.[A-Za-z0-9_]+)'", message)))
    if ops:
        return f"ops it cannot convert to int8 TFLite: {', '.join(ops)}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"
