"""ONNX export: float32 through tf2onnx, int8 through onnxruntime's static quantization (QDQ).

Opset 17 is fixed: onnxruntime 1.16+ and every current runtime read it, and QDQ per-channel
quantization needs opset 13 or newer.
"""

import pathlib
import tempfile

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")


def convert_float(keras_model, path):
    """Write the float32 ONNX model of `keras_model` to `path` and check it with onnx.checker.

    tf2onnx's `from_keras` breaks on Keras 3 models (onnx/tensorflow-onnx#2448); converting a
    `tf.function` with an explicit signature sidesteps Keras entirely and names the tensors.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, *keras_model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image):
        return {OUTPUT_NAME: keras_model(image, training=False)}

    tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
    tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET, output_path=str(path))
    onnx.checker.check_model(str(path), full_check=True)


def quantize_int8(float_path, path, calibration_images, method="MinMax"):
    """Write a static int8 ONNX model of the float model at `float_path` to `path`.

    The layout is the portable one: QDQ nodes, uint8 activations, int8 per-channel weights. Signed
    int8 activations do not load in some runtimes. Input and output stay float32, so the same
    preprocessing feeds the float and the int8 model. Calibrated on float32 (N, H, W, C) images.
    """
    import onnx
    from onnxruntime import quantization

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_images[index : index + 1] for index in range(len(calibration_images)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = pathlib.Path(scratch) / "prepared.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends; the symbolic
        # shape pass needs sympy and adds nothing for a model with one dynamic batch dimension.
        quantization.quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            calibrate_method=getattr(quantization.CalibrationMethod, method),
        )
    onnx.checker.check_model(str(path), full_check=True)
