"""The operators of a 16x8 TFLite model (int16 activations, int8 weights, int64 bias), bit-exact with
TFLite's reference kernels.

The arithmetic follows tensorflow/lite/kernels/internal/reference/integer_ops/ (conv.h,
fully_connected.h, pooling.h for their int16 versions) and reference/softmax.h (SoftmaxInt16),
with the multipliers computed as the kernels' Prepare functions compute them. int16 activations
are symmetric: zero points are 0, so no offset enters the sums. Sums of products are int64 in C;
here they are exact too, three ways:
- "float", up to 512 terms (the convolutions): each int16 input splits into a high and a low byte
  (x = 256·high + low, low in [0, 255]); every product with an int8 weight is then below 2^15, so
  512 of them sum exactly in float32, and two float32 GEMMs (BLAS) cost less than one in float64;
- "float", longer sums (the dense layer): one float64 GEMM, exact to 2^53 (terms below 2^22);
- "integer" (soft-float CPUs, where floating point is emulated): an int64 matrix product.
"""

import math

import numpy as np

from edge_runtime.engine import fixed_point, kernels

INT16_MIN, INT16_MAX = -32768, 32767
FLOAT64_EXACT_TERMS = 1 << 30  # 2^30 terms of at most 2^22 stay within 2^52
FLOAT32_SPLIT_TERMS = 512  # 512 terms below 2^15 stay within 2^24


def activation_range_int16(operator, activation, output):
    """CalculateActivationRangeQuantized for an int16 output."""
    scale, zero_point = output.scale, output.zero_point
    if activation == 0:
        return INT16_MIN, INT16_MAX
    if activation == 1:
        return max(INT16_MIN, zero_point + kernels.round_half_away_from_zero_float32(0.0, scale)), INT16_MAX
    if activation == 3:
        return (max(INT16_MIN, zero_point + kernels.round_half_away_from_zero_float32(0.0, scale)),
                min(INT16_MAX, zero_point + kernels.round_half_away_from_zero_float32(6.0, scale)))
    if activation == 2:
        return (max(INT16_MIN, zero_point + kernels.round_half_away_from_zero_float32(-1.0, scale)),
                min(INT16_MAX, zero_point + kernels.round_half_away_from_zero_float32(1.0, scale)))
    raise kernels.UnsupportedModel(f"{operator.name} with fused activation "
                                   f"{kernels.ACTIVATIONS.get(activation, activation)} is not supported")


def require_symmetric(operator, tensor, role):
    if tensor.zero_point != 0:
        raise kernels.UnsupportedModel(f"{operator.name} int16 {role} must have zero point 0, has {tensor.zero_point}")


class Requantizer16:
    """Bias, per-channel scale, clamp: the tail of the 16x8 conv and FC.

    Conv scales its int64 accumulator with a fixed-point multiplier (MultiplyByQuantizedMultiplier
    for int64). The reference fully-connected kernel, as for int8, multiplies by the real scale
    in double and rounds (`in_double`): measured against LiteRT, the fixed-point version differs
    by one step on about one output in ten.
    """

    def __init__(self, kernel, bias, input_tensor, filter_tensor, output_tensor, activation, channels,
                 in_double=False):
        operator = kernel.operator
        filter_scales = filter_tensor.scales
        if len(filter_scales) not in (1, channels):
            raise kernels.UnsupportedModel(f"{operator.name} filter has {len(filter_scales)} scales for {channels} channels")
        if np.any(filter_tensor.zero_points != 0):
            raise kernels.UnsupportedModel(f"{operator.name} filter has a non-zero zero point")
        input_scale, output_scale = float(input_tensor.scale), float(output_tensor.scale)
        real = [input_scale * float(scale) / output_scale for scale in filter_scales]
        self.real_multiplier = np.resize(np.array(real, dtype=np.float64), channels)
        self.in_double = in_double
        pairs = [fixed_point.quantize_multiplier(value) for value in real]
        self.multiplier = np.resize(np.array([m for m, _ in pairs], dtype=np.int64), channels)
        self.shift = np.resize(np.array([s for _, s in pairs], dtype=np.int64), channels)
        self.bias = np.zeros(channels, np.int64) if bias is None else bias.astype(np.int64).reshape(channels)
        self.activation_min, self.activation_max = activation_range_int16(operator, activation, output_tensor)

    def __call__(self, sums):
        if self.in_double:
            product = (sums + self.bias).astype(np.float64) * self.real_multiplier
            magnitude = np.abs(product)
            whole = np.floor(magnitude)
            scaled = np.copysign(whole + (magnitude - whole >= 0.5), product)  # C's round, exactly
            return np.clip(scaled, self.activation_min, self.activation_max).astype(np.int16)
        scaled = fixed_point.multiply_by_quantized_multiplier_int64(sums + self.bias, self.multiplier, self.shift)
        return np.clip(scaled, self.activation_min, self.activation_max).astype(np.int16)


def check_weighted(operator, source, weights, bias, output):
    kernels.require_type(operator, source, np.int16, "input")
    kernels.require_type(operator, weights, np.int8, "filter")
    kernels.require_type(operator, output, np.int16, "output")
    kernels.require_constant(operator, weights, "filter")
    require_symmetric(operator, source, "input")
    require_symmetric(operator, output, "output")
    if bias is not None:
        if bias.type_name not in ("int64", "int32"):
            raise kernels.UnsupportedModel(f"{operator.name} bias is {bias.type_name}, expected int64")
        kernels.require_constant(operator, bias, "bias")


def prepare_weights(weights_k_by_n, arithmetic):
    """int8 weights (K, N) in the dtype `gemm` multiplies them in (see the module docstring)."""
    depth = weights_k_by_n.shape[0]
    if arithmetic == "integer":
        dtype = np.int64
    else:
        dtype = np.float32 if depth <= FLOAT32_SPLIT_TERMS else np.float64
    return np.ascontiguousarray(weights_k_by_n, dtype=dtype)


def gemm(rows, weights):
    """int16 rows (M, K) times prepared weights (K, N): exact int64 sums (see the module docstring)."""
    if weights.dtype == np.int64:
        return np.matmul(rows.astype(np.int64), weights)
    if weights.dtype == np.float64:
        return np.matmul(rows.astype(np.float64), weights).astype(np.int64)
    high = np.matmul((rows >> 8).astype(np.float32), weights).astype(np.int64)
    low = np.matmul((rows & 0xFF).astype(np.float32), weights).astype(np.int64)
    return (high << 8) + low


class Conv2D16(kernels.Kernel):
    """CONV_2D 16x8: int16 input, per-channel int8 filter (O, KH, KW, I), int64 bias, int16 output."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        check_weighted(operator, source, weights, bias, self.outputs[0])
        self.padding, self.stride, self.dilation, activation = kernels.convolution_options(operator)
        channels, self.kernel_height, self.kernel_width, self.in_channels = weights.shape
        depth = self.kernel_height * self.kernel_width * self.in_channels
        if depth > FLOAT64_EXACT_TERMS:
            raise kernels.UnsupportedModel(f"{operator.name} sums {depth} products, too many to be exact")
        self.requantize = Requantizer16(self, None if bias is None else bias.data, source, weights, self.outputs[0],
                                        activation, channels)
        self.weights = prepare_weights(weights.data.reshape(channels, depth).T, arithmetic)

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        if channels != self.in_channels:
            raise ValueError(f"{self.operator.name}: input has {channels} channels, the filter expects {self.in_channels}")
        out_height = kernels.output_size(self.padding, self.stride[0], self.dilation[0], height, self.kernel_height)
        out_width = kernels.output_size(self.padding, self.stride[1], self.dilation[1], width, self.kernel_width)
        return [(batch, out_height, out_width, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        _, out_height, out_width, channels = output_shapes[0]
        # Points outside the image are skipped by the reference kernel; with a zero point of 0,
        # padding with zeros adds nothing either.
        padded = kernels.pad_spatial(source, self.padding, self.stride, self.dilation,
                                     (self.kernel_height, self.kernel_width), (out_height, out_width), 0)
        result = np.empty(output_shapes[0], np.int16)
        chunk = max(1, kernels.ACCUMULATORS_PER_CHUNK // max(out_height * out_width * channels, 1))
        for start in range(0, len(source), chunk):
            patches = kernels.image_patches(padded[start:start + chunk], (self.kernel_height, self.kernel_width),
                                            self.stride, self.dilation, (out_height, out_width))
            result[start:start + chunk] = self.requantize(gemm(patches, self.weights)).reshape(
                -1, out_height, out_width, channels)
        return [result]


class FullyConnected16(kernels.Kernel):
    """FULLY_CONNECTED 16x8: int16 input flattened to (rows, K), int8 weights (units, K), int64 bias."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        check_weighted(operator, source, weights, bias, self.outputs[0])
        if kernels.option(operator, 1, "b") != 0:
            raise kernels.UnsupportedModel(f"{operator.name} with shuffled weights is not supported")
        self.keep_num_dims = bool(kernels.option(operator, 2, "b"))
        units, self.depth = weights.shape
        self.requantize = Requantizer16(self, None if bias is None else bias.data, source, weights, self.outputs[0],
                                        kernels.option(operator, 0, "b"), units, in_double=True)
        self.weights = prepare_weights(weights.data.T, arithmetic)

    def shapes(self, shapes, values):
        total = int(np.prod(shapes[0], dtype=np.int64))
        if total % self.depth:
            raise ValueError(f"{self.operator.name}: input of {total} values is not a multiple of {self.depth}")
        if self.keep_num_dims:
            return [tuple(shapes[0][:-1]) + (self.weights.shape[1],)]
        return [(total // self.depth, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        sums = gemm(inputs[0].reshape(-1, self.depth), self.weights)
        return [self.requantize(sums).reshape(output_shapes[0])]


class MaxPool16(kernels.Kernel):
    """MAX_POOL_2D on int16 (input and output share scale and zero point)."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        kernels.require_type(operator, self.input(0), np.int16, "input")
        kernels.require_type(operator, self.outputs[0], np.int16, "output")
        self.padding, self.stride, self.window, activation = kernels.pool_options(operator)
        self.activation_min, self.activation_max = activation_range_int16(operator, activation, self.outputs[0])

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        return [(batch, kernels.output_size(self.padding, self.stride[0], 1, height, self.window[0]),
                 kernels.output_size(self.padding, self.stride[1], 1, width, self.window[1]), channels)]

    def run(self, inputs, output_shapes):
        _, out_height, out_width, _ = output_shapes[0]
        # Positions outside the image are skipped by the reference kernel; −32768 never wins a max.
        padded = kernels.pad_spatial(inputs[0], self.padding, self.stride, (1, 1), self.window,
                                     (out_height, out_width), INT16_MIN)
        result = None
        for row in range(self.window[0]):
            for column in range(self.window[1]):
                window = padded[:, row:row + (out_height - 1) * self.stride[0] + 1:self.stride[0],
                                column:column + (out_width - 1) * self.stride[1] + 1:self.stride[1], :]
                result = window.copy() if result is None else np.maximum(result, window, out=result)
        np.clip(result, self.activation_min, self.activation_max, out=result)
        return [result]


class Softmax16(kernels.Kernel):
    """SOFTMAX int16 → int16 (output scale 1/32768, zero point 0): reference_ops::SoftmaxInt16, with
    exp and 1/(1 + x) from 513-entry tables interpolated linearly."""

    RANGE = 65535  # int16 max − min

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, output = self.input(0), self.outputs[0]
        kernels.require_type(operator, source, np.int16, "input")
        kernels.require_type(operator, output, np.int16, "output")
        require_symmetric(operator, source, "input")
        require_symmetric(operator, output, "output")
        beta = float(np.float32(kernels.option(operator, 0, "f", 1.0)))
        # The input difference is scaled so that [−65535, 0] covers exp's table, [−10, 0]; the
        # product of the two C floats is taken in float before the division in double.
        product = float(np.float32(source.scale) * np.float32(beta))
        self.multiplier, self.shift = fixed_point.quantize_multiplier(product / (10.0 / 65535.0))
        self.exp_table = fixed_point.int16_lookup_table(math.exp, 10.0 / self.RANGE, INT16_MAX, 2.0 / self.RANGE, 0)
        self.reciprocal_table = fixed_point.int16_lookup_table(lambda value: 1.0 / (1.0 + value), 1.0 / self.RANGE,
                                                               INT16_MIN, 2.0 / self.RANGE, 0)

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        source = inputs[0].astype(np.int64)
        difference = source - source.max(axis=-1, keepdims=True)
        scaled = fixed_point.multiply_by_quantized_multiplier(difference, self.multiplier, self.shift)
        centred = np.clip(scaled + INT16_MAX, INT16_MIN, INT16_MAX)
        exps = fixed_point.int16_table_lookup(centred, self.exp_table)  # Q0.15
        total = exps.sum(axis=-1, keepdims=True)  # Q16.15
        headroom_plus_one = fixed_point.count_leading_zeros_32(total)
        shifted = ((total << (headroom_plus_one - 1)) + (1 << 13)) >> 14
        centred_sum = np.clip(shifted - ((1 << 15) + (1 << 16)), INT16_MIN, INT16_MAX)
        reciprocal = fixed_point.int16_table_lookup(centred_sum, self.reciprocal_table)
        right_shift = 31 - headroom_plus_one
        result = (exps * reciprocal + (np.int64(1) << (right_shift - 1))) >> right_shift
        return [np.clip(result, 0, INT16_MAX).astype(np.int16)]


KERNELS_16X8 = {
    "CONV_2D": Conv2D16,
    "FULLY_CONNECTED": FullyConnected16,
    "MAX_POOL_2D": MaxPool16,
    "SOFTMAX": Softmax16,
}
