"""Float32 operators: the layers an int8 model keeps in float when the export's recovery ladder falls back.

A mixed model dequantizes before such a layer and quantizes after it, so only these ops see
float tensors. The reference kernels sum in float32 in one order; here sums are taken in float64
and rounded once to float32, which agrees with LiteRT within 1e-5 (checked in tests) — exactness
is neither possible across summation orders nor needed, since the next QUANTIZE decides.
"""

import numpy as np

from edge_runtime.engine import kernels

FLOAT_ACTIVATIONS = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


def float_activation(operator, activation):
    if activation not in FLOAT_ACTIVATIONS:
        raise kernels.UnsupportedModel(f"{operator.name} with fused activation "
                                       f"{kernels.ACTIVATIONS.get(activation, activation)} is not supported")
    return FLOAT_ACTIVATIONS[activation]


def apply_activation(values, bounds):
    low, high = bounds
    if low is not None or high is not None:
        np.clip(values, low, high, out=values)
    return values


def check_weighted(operator, source, weights, bias, output):
    kernels.require_type(operator, source, np.float32, "input")
    kernels.require_type(operator, weights, np.float32, "filter")
    kernels.require_type(operator, output, np.float32, "output")
    kernels.require_constant(operator, weights, "filter")
    if bias is not None:
        kernels.require_type(operator, bias, np.float32, "bias")
        kernels.require_constant(operator, bias, "bias")


class Conv2DFloat(kernels.Kernel):
    """CONV_2D on float32: filter (O, KH, KW, I), bias, fused activation."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        check_weighted(operator, source, weights, bias, self.outputs[0])
        self.padding, self.stride, self.dilation, activation = kernels.convolution_options(operator)
        self.activation = float_activation(operator, activation)
        channels, self.kernel_height, self.kernel_width, self.in_channels = weights.shape
        self.weights = np.ascontiguousarray(weights.data.reshape(channels, -1).T, dtype=np.float64)
        self.bias = np.zeros(channels) if bias is None else bias.data.astype(np.float64).reshape(channels)

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        if channels != self.in_channels:
            raise ValueError(f"{self.operator.name}: input has {channels} channels, the filter expects {self.in_channels}")
        out_height = kernels.output_size(self.padding, self.stride[0], self.dilation[0], height, self.kernel_height)
        out_width = kernels.output_size(self.padding, self.stride[1], self.dilation[1], width, self.kernel_width)
        return [(batch, out_height, out_width, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        _, out_height, out_width, channels = output_shapes[0]
        padded = kernels.pad_spatial(inputs[0], self.padding, self.stride, self.dilation,
                                     (self.kernel_height, self.kernel_width), (out_height, out_width), 0.0)
        patches = kernels.image_patches(padded, (self.kernel_height, self.kernel_width), self.stride, self.dilation,
                                        (out_height, out_width))
        sums = np.matmul(patches.astype(np.float64), self.weights) + self.bias
        return [apply_activation(sums, self.activation).astype(np.float32).reshape(output_shapes[0])]


class FullyConnectedFloat(kernels.Kernel):
    """FULLY_CONNECTED on float32: input flattened to (rows, K), weights (units, K), bias."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        check_weighted(operator, source, weights, bias, self.outputs[0])
        self.activation = float_activation(operator, kernels.option(operator, 0, "b"))
        self.keep_num_dims = bool(kernels.option(operator, 2, "b"))
        units, self.depth = weights.shape
        self.weights = np.ascontiguousarray(weights.data.T, dtype=np.float64)
        self.bias = np.zeros(units) if bias is None else bias.data.astype(np.float64).reshape(units)

    def shapes(self, shapes, values):
        total = int(np.prod(shapes[0], dtype=np.int64))
        if total % self.depth:
            raise ValueError(f"{self.operator.name}: input of {total} values is not a multiple of {self.depth}")
        if self.keep_num_dims:
            return [tuple(shapes[0][:-1]) + (self.weights.shape[1],)]
        return [(total // self.depth, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        sums = np.matmul(inputs[0].reshape(-1, self.depth).astype(np.float64), self.weights) + self.bias
        return [apply_activation(sums, self.activation).astype(np.float32).reshape(output_shapes[0])]


class MaxPoolFloat(kernels.Kernel):
    """MAX_POOL_2D on float32."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        kernels.require_type(operator, self.input(0), np.float32, "input")
        self.padding, self.stride, self.window, activation = kernels.pool_options(operator)
        self.activation = float_activation(operator, activation)

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        return [(batch, kernels.output_size(self.padding, self.stride[0], 1, height, self.window[0]),
                 kernels.output_size(self.padding, self.stride[1], 1, width, self.window[1]), channels)]

    def run(self, inputs, output_shapes):
        _, out_height, out_width, _ = output_shapes[0]
        padded = kernels.pad_spatial(inputs[0], self.padding, self.stride, (1, 1), self.window,
                                     (out_height, out_width), -np.inf)
        result = None
        for row in range(self.window[0]):
            for column in range(self.window[1]):
                window = padded[:, row:row + (out_height - 1) * self.stride[0] + 1:self.stride[0],
                                column:column + (out_width - 1) * self.stride[1] + 1:self.stride[1], :]
                result = window.copy() if result is None else np.maximum(result, window, out=result)
        return [apply_activation(result, self.activation).astype(np.float32)]


class SoftmaxFloat(kernels.Kernel):
    """SOFTMAX on float32 over the last axis, with beta."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        kernels.require_type(operator, self.input(0), np.float32, "input")
        self.beta = float(np.float32(kernels.option(operator, 0, "f", 1.0)))

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        source = inputs[0].astype(np.float64)
        exps = np.exp((source - source.max(axis=-1, keepdims=True)) * self.beta)
        return [(exps / exps.sum(axis=-1, keepdims=True)).astype(np.float32)]


FLOAT_KERNELS = {
    "CONV_2D": Conv2DFloat,
    "FULLY_CONNECTED": FullyConnectedFloat,
    "MAX_POOL_2D": MaxPoolFloat,
    "SOFTMAX": SoftmaxFloat,
}
