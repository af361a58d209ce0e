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


WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def quantize_int8(float_path, path, calibration_images, method="MinMax", nodes_to_exclude=(), activation_bits=8):
    """Write a static int8 ONNX model of the float model at `float_path` to `path`.

    The layout is the portable one: QDQ nodes, uint8 activations, int8 per-channel weights. Signed
    int8 activations do not load in some runtimes. Input and output stay float32, so the same
    preprocessing feeds the float and the int8 model. Calibrated on float32 (N, H, W, C) images.
    The recovery ladder's variants: `nodes_to_exclude` (node names, see weighted_nodes) stay in
    float; `activation_bits` 16 gives int16 activations (QDQ through com.microsoft's Q/DQ ops,
    which opset 17 needs for 16 bits), weights staying int8.
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

    if activation_bits not in (8, 16):
        raise ValueError(f"activation bits must be 8 or 16, got {activation_bits}")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare(float_path, pathlib.Path(scratch))
        quantization.quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8 if activation_bits == 8 else quantization.QuantType.QInt16,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            calibrate_method=getattr(quantization.CalibrationMethod, method),
            nodes_to_exclude=list(nodes_to_exclude) or None,
            extra_options={"UseQDQContribOps": True} if activation_bits == 16 else None,
        )
    onnx.checker.check_model(str(path), full_check=True)


def prepare(float_path, directory):
    """Shape inference and graph clean-up before quantization, as onnxruntime recommends; the symbolic
    shape pass needs sympy and adds nothing for a model with one dynamic batch dimension."""
    from onnxruntime import quantization

    prepared = pathlib.Path(directory) / "prepared.onnx"
    quantization.quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    return prepared


def weighted_nodes(float_path):
    """Names of the nodes with weights (Conv, Gemm, MatMul) of the prepared model, in graph order:
    the names quantize_int8's `nodes_to_exclude` takes."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        graph = onnx.load(str(prepare(float_path, pathlib.Path(scratch)))).graph
    return [node.name for node in graph.node if node.op_type in WEIGHTED_OPS]


class OnnxMaker:
    """The recovery ladder's ONNX candidates (see export.recovery): int8, some layers in float, int16 activations."""

    format = "ONNX"
    suffix = ".onnx"
    precision_16 = "16x8"

    def __init__(self, float_path, method, scratch):
        self.float_path, self.method, self.scratch = float_path, method, pathlib.Path(scratch)
        self.nodes = weighted_nodes(float_path)

    def quantize(self, images, **options):
        path = self.scratch / "quantized.onnx"
        quantize_int8(self.float_path, path, images, self.method, **options)
        return path.read_bytes()

    def int8(self, images):
        return self.quantize(images)

    def rank(self, images, validation_accuracy):
        """The weighted nodes, worst first, by measurement: the validation accuracy (from
        `validation_accuracy(model bytes)`) with that node alone kept in float, highest first.

        Measured rather than taken from the TFLite debugger: onnxruntime places its Q/DQ pairs
        differently, and the layer that matters most is not always the same one.
        """
        rows = []
        for index, node in enumerate(self.nodes):
            accuracy = validation_accuracy(self.quantize(images, nodes_to_exclude=[node]))
            rows.append({"op": "ONNX " + node.split("/")[-1], "tensor": node, "layer_index": index,
                         "validation_accuracy_with_it_in_float": accuracy})
        return sorted(rows, key=lambda row: -row["validation_accuracy_with_it_in_float"])

    def float_layer_names(self, rows):
        return tuple(row["tensor"] for row in rows)

    def with_float_layers(self, images, rows):
        return self.quantize(images, nodes_to_exclude=self.float_layer_names(rows))

    def sixteen_bit(self, images):
        return self.quantize(images, activation_bits=16)
