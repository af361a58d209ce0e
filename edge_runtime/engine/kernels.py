"""The operators of a full-integer int8 TFLite model in numpy, bit-exact with TFLite's reference kernels.

Each class below is one builtin operator. It checks its tensors when the model is loaded (raising
UnsupportedModel with a one-line reason), works out output shapes when tensors are allocated, and
computes outputs on invoke. The arithmetic follows tensorflow/lite/kernels/internal/reference/
(integer_ops/conv.h, depthwise_conv.h, fully_connected.h, pooling.h, add.h, reduce.h, softmax.h,
quantize.h, requantize.h, activations.cc) and the multipliers are computed as the kernels' Prepare
functions compute them, down to which products are taken in float and which in double.

Sums of products (conv, depthwise conv, fully connected) are exact either way they are computed:
- "float": through BLAS. The input's zero point is folded into the bias (Σ(x − zp)·w =
  Σx·w − zp·Σw), so each term is an int8 times an int8 weight, |x·w| ≤ 128·128 = 2^14. A sum of up
  to 1,024 such terms stays within ±2^24, where float32 represents every integer, so every partial
  sum is exact whatever order BLAS adds in. Longer sums (the seed model's dense layer has 1,600
  terms) use float64, exact to 2^53.
- "integer": int32 matrix products, for CPUs whose floating point is emulated in software
  (Debian armel): there a float32 GEMM costs about thirty times an int32 one.
Requantization is integer arithmetic (int64) in both cases.
"""

import numpy as np

from edge_runtime.engine import fixed_point

INT8_MIN, INT8_MAX = -128, 127
FLOAT32_EXACT_TERMS = 1024  # see the module docstring: 1024 · 2^14 = 2^24
# A convolution runs a few images at a time, so that its int64 accumulators (this many values,
# 1 MiB) stay in the CPU's cache through the requantization passes and a large batch needs no
# large temporaries: twice as fast as whole batches of 256.
ACCUMULATORS_PER_CHUNK = 1 << 17

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


class UnsupportedModel(ValueError):
    """The model needs something this engine does not implement; the message says what."""


def option(operator, field, kind, default=0):
    """One scalar of an operator's builtin options table (schema defaults when absent)."""
    return default if operator.options is None else operator.options.scalar(field, kind, default)


def convolution_options(operator):
    """CONV_2D's Conv2DOptions, for every precision: (padding, (stride_h, stride_w), (dilation_h,
    dilation_w), fused activation). Fields: padding 0, stride_w 1, stride_h 2, activation 3,
    dilation_w 4, dilation_h 5."""
    return (option(operator, 0, "b"), (option(operator, 2, "i", 1), option(operator, 1, "i", 1)),
            (option(operator, 5, "i", 1), option(operator, 4, "i", 1)), option(operator, 3, "b"))


def pool_options(operator):
    """MAX_POOL_2D's and AVERAGE_POOL_2D's Pool2DOptions: (padding, (stride_h, stride_w), (window_h,
    window_w), fused activation). Fields: padding 0, stride_w 1, stride_h 2, filter_width 3,
    filter_height 4, activation 5."""
    return (option(operator, 0, "b"), (option(operator, 2, "i", 1), option(operator, 1, "i", 1)),
            (option(operator, 4, "i", 1), option(operator, 3, "i", 1)), option(operator, 5, "b"))


def round_half_away_from_zero_float32(numerator, denominator):
    """TfLiteRound(f / scale) as C computes it on floats: a float32 quotient, halves away from zero."""
    quotient = float(np.float32(numerator) / np.float32(denominator))
    return fixed_point.round_half_away_from_zero(quotient)


def activation_range(operator, activation, output):
    """CalculateActivationRangeQuantized (kernel_util.cc): the int8 output range of a fused activation."""
    scale, zero_point = output.scale, output.zero_point
    if activation == 0:
        return INT8_MIN, INT8_MAX
    if activation == 1:
        return max(INT8_MIN, zero_point + round_half_away_from_zero_float32(0.0, scale)), INT8_MAX
    if activation == 3:
        return (max(INT8_MIN, zero_point + round_half_away_from_zero_float32(0.0, scale)),
                min(INT8_MAX, zero_point + round_half_away_from_zero_float32(6.0, scale)))
    if activation == 2:
        return (max(INT8_MIN, zero_point + round_half_away_from_zero_float32(-1.0, scale)),
                min(INT8_MAX, zero_point + round_half_away_from_zero_float32(1.0, scale)))
    raise UnsupportedModel(f"{operator.name} with fused activation {ACTIVATIONS.get(activation, activation)} is not supported")


def require_type(operator, tensor, dtype, role):
    """Refuse a tensor of the wrong type, naming the op; a float tensor means a float model."""
    if tensor.dtype is not None and np.dtype(tensor.dtype) == np.dtype(dtype):
        return
    if np.dtype(dtype) == np.int8 and tensor.type_name in ("float32", "float16"):
        raise UnsupportedModel(f"{operator.name} {role} is {tensor.type_name}: this is a float model, and the "
                               "numpy engine runs quantized models only")
    raise UnsupportedModel(f"{operator.name} {role} is {tensor.type_name}, expected {np.dtype(dtype).name}")


def require_constant(operator, tensor, role):
    if tensor.data is None:
        raise UnsupportedModel(f"{operator.name} {role} must be a constant in the model file")


def padding_before(padding, stride, dilation, in_size, filter_size, out_size):
    """TFLite's ComputePaddingWithOffset: padding before the first row/column (the extra one goes after)."""
    if padding == 1:  # VALID
        return 0
    effective = (filter_size - 1) * dilation + 1
    return max((out_size - 1) * stride + effective - in_size, 0) // 2


def output_size(padding, stride, dilation, in_size, filter_size):
    effective = (filter_size - 1) * dilation + 1
    if padding == 0:  # SAME
        return (in_size + stride - 1) // stride
    return (in_size - effective + stride) // stride


class Kernel:
    """Base: `shapes` gives output shapes from input shapes, `run` computes outputs from input arrays.

    A kernel whose `folds` is True computes only from shapes and constants (SHAPE, STRIDED_SLICE on
    shapes, ...): the interpreter runs it when tensors are allocated, not on every invoke.
    """

    folds = False

    def __init__(self, operator, tensors, arithmetic):
        self.operator = operator
        self.arithmetic = arithmetic
        self.inputs = [tensors[i] if i >= 0 else None for i in operator.inputs]
        self.outputs = [tensors[i] for i in operator.outputs]

    def input(self, position):
        return self.inputs[position] if position < len(self.inputs) else None


def matmul_exact(left, right_prepared, arithmetic):
    """left (int8, rows × K) times a weight matrix already in the GEMM's dtype; returns int64 sums."""
    if arithmetic == "integer":
        return np.matmul(left.astype(np.int32), right_prepared).astype(np.int64)
    product = np.matmul(left.astype(right_prepared.dtype), right_prepared)
    return product.astype(np.int64)


def prepare_weights(weights_k_by_n, arithmetic):
    """Weights as the GEMM wants them: int32 (integer), float32 (≤ 1,024 terms), else float64."""
    depth = weights_k_by_n.shape[0]
    if arithmetic == "integer":
        return np.ascontiguousarray(weights_k_by_n, dtype=np.int32)
    return np.ascontiguousarray(weights_k_by_n, dtype=np.float32 if depth <= FLOAT32_EXACT_TERMS else np.float64)


class PerChannelRequantizer:
    """The output stage shared by conv, depthwise conv and fully connected: bias, scale, clamp.

    Conv and depthwise conv scale with a fixed-point multiplier per channel
    (PopulateConvolutionQuantizationParams: input scale · filter scale / output scale, each C
    float widened to double first). The reference fully-connected kernel instead multiplies the
    accumulator by that same real scale in double and rounds (`in_double`).
    """

    def __init__(self, kernel, weights, bias, input_tensor, filter_tensor, output_tensor, activation,
                 channels, in_double=False):
        operator = kernel.operator
        filter_scales = filter_tensor.scales
        if len(filter_scales) not in (1, channels):
            raise UnsupportedModel(f"{operator.name} filter has {len(filter_scales)} scales for {channels} channels")
        if np.any(filter_tensor.zero_points != 0):
            raise UnsupportedModel(f"{operator.name} filter has a non-zero zero point")
        input_scale, output_scale = float(input_tensor.scale), float(output_tensor.scale)
        real = [input_scale * float(filter_scale) / output_scale for filter_scale in filter_scales]
        self.real_multiplier = np.resize(np.array(real, dtype=np.float64), channels)
        pairs = [fixed_point.quantize_multiplier(value) for value in real]
        self.multiplier = np.resize(np.array([m for m, _ in pairs], dtype=np.int64), channels)
        self.shift = np.resize(np.array([s for _, s in pairs], dtype=np.int64), channels)
        self.in_double = in_double
        # Σ(x − zp)·w + bias = Σx·w + (bias − zp·Σw): the zero point moves into a per-channel offset.
        weight_sums = weights.reshape(channels, -1).astype(np.int64).sum(axis=1)
        bias_values = np.zeros(channels, np.int64) if bias is None else bias.astype(np.int64).reshape(channels)
        self.offset = bias_values - input_tensor.zero_point * weight_sums
        self.output_zero_point = output_tensor.zero_point
        self.activation_min, self.activation_max = activation_range(operator, activation, output_tensor)

    def __call__(self, sums):
        """sums: int64 (..., channels) of Σx·w, modified in place; returns int8."""
        sums += self.offset
        if self.in_double:
            # The double product is exact enough that this matches C bit for bit: both round the
            # same IEEE double, and a float64 multiply costs nothing next to the GEMM even where
            # floating point is emulated (one value per output unit).
            return fixed_point.round_scaled_to_int8(sums, self.real_multiplier, self.output_zero_point,
                                                    self.activation_min, self.activation_max)
        return fixed_point.requantize_to_int8(sums, self.multiplier, self.shift, self.output_zero_point,
                                              self.activation_min, self.activation_max)


class Conv2D(Kernel):
    """CONV_2D: int8 input, per-channel int8 weights (O, KH, KW, I), int32 bias, fused activation."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        require_type(operator, source, np.int8, "input")
        require_type(operator, weights, np.int8, "filter")
        require_type(operator, self.outputs[0], np.int8, "output")
        require_constant(operator, weights, "filter")
        if bias is not None:
            require_type(operator, bias, np.int32, "bias")
            require_constant(operator, bias, "bias")
        self.padding, self.stride, self.dilation, activation = convolution_options(operator)
        channels, self.kernel_height, self.kernel_width, self.in_channels = weights.shape
        self.requantize = PerChannelRequantizer(self, weights.data, None if bias is None else bias.data, source,
                                                weights, self.outputs[0], activation, channels)
        depth = self.kernel_height * self.kernel_width * self.in_channels
        self.weights = prepare_weights(weights.data.reshape(channels, depth).T, arithmetic)
        self.pad_value = source.zero_point

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        if channels != self.in_channels:
            raise ValueError(f"{self.operator.name}: input has {channels} channels, the filter expects {self.in_channels}")
        out_height = output_size(self.padding, self.stride[0], self.dilation[0], height, self.kernel_height)
        out_width = output_size(self.padding, self.stride[1], self.dilation[1], width, self.kernel_width)
        return [(batch, out_height, out_width, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        _, out_height, out_width, channels = output_shapes[0]
        padded = pad_spatial(source, self.padding, self.stride, self.dilation, (self.kernel_height, self.kernel_width),
                             (out_height, out_width), self.pad_value)
        result = np.empty(output_shapes[0], np.int8)
        chunk = max(1, ACCUMULATORS_PER_CHUNK // max(out_height * out_width * channels, 1))
        for start in range(0, len(source), chunk):
            patches = image_patches(padded[start:start + chunk], (self.kernel_height, self.kernel_width),
                                    self.stride, self.dilation, (out_height, out_width))
            sums = matmul_exact(patches, self.weights, self.arithmetic)
            result[start:start + chunk] = self.requantize(sums).reshape(-1, out_height, out_width, channels)
        return [result]


def pad_spatial(source, padding, stride, dilation, kernel_size, out_size, value):
    """Pad height and width as TFLite's SAME padding does (the odd pixel after), with `value`."""
    if padding == 1:
        return source
    pads = []
    for axis in (0, 1):
        in_size = source.shape[1 + axis]
        effective = (kernel_size[axis] - 1) * dilation[axis] + 1
        total = max((out_size[axis] - 1) * stride[axis] + effective - in_size, 0)
        pads.append((total // 2, total - total // 2))
    if not any(before or after for before, after in pads):
        return source
    return np.pad(source, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def image_patches(padded, kernel_size, stride, dilation, out_size):
    """The im2col matrix (N·OH·OW, KH·KW·C) of a padded NHWC batch, as a strided view then one copy."""
    batch, _, _, channels = padded.shape
    if kernel_size == (1, 1) and stride == (1, 1):
        return padded.reshape(-1, channels)
    s_batch, s_row, s_column, s_channel = padded.strides
    view = np.lib.stride_tricks.as_strided(
        padded,
        shape=(batch, out_size[0], out_size[1], kernel_size[0], kernel_size[1], channels),
        strides=(s_batch, s_row * stride[0], s_column * stride[1], s_row * dilation[0], s_column * dilation[1], s_channel),
        writeable=False,
    )
    return view.reshape(batch * out_size[0] * out_size[1], kernel_size[0] * kernel_size[1] * channels)


class DepthwiseConv2D(Kernel):
    """DEPTHWISE_CONV_2D: each output channel from one input channel; filter (1, KH, KW, C·multiplier)."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        require_type(operator, source, np.int8, "input")
        require_type(operator, weights, np.int8, "filter")
        require_type(operator, self.outputs[0], np.int8, "output")
        require_constant(operator, weights, "filter")
        if bias is not None:
            require_type(operator, bias, np.int32, "bias")
            require_constant(operator, bias, "bias")
        self.padding = option(operator, 0, "b")
        self.stride = (option(operator, 2, "i", 1), option(operator, 1, "i", 1))
        self.depth_multiplier = option(operator, 3, "i", 1)
        self.dilation = (option(operator, 6, "i", 1), option(operator, 5, "i", 1))
        _, self.kernel_height, self.kernel_width, channels = weights.shape
        if self.depth_multiplier < 1 or channels % self.depth_multiplier:
            # Newer converters may leave depth_multiplier at 0: infer it from the shapes at allocation.
            self.depth_multiplier = 0
        self.channels = channels
        terms = self.kernel_height * self.kernel_width
        filter_values = weights.data.reshape(terms, channels)
        self.requantize = PerChannelRequantizer(self, filter_values.T.copy(), None if bias is None else bias.data,
                                                source, weights, self.outputs[0], option(operator, 4, "b"), channels)
        if arithmetic == "integer":
            self.weights = filter_values.astype(np.int32)
        else:
            self.weights = filter_values.astype(np.float32 if terms <= FLOAT32_EXACT_TERMS else np.float64)
        self.pad_value = source.zero_point

    def shapes(self, shapes, values):
        batch, height, width, in_channels = shapes[0]
        if self.channels % in_channels:
            raise ValueError(f"{self.operator.name}: {in_channels} input channels for {self.channels} outputs")
        self.depth_multiplier = self.channels // in_channels
        out_height = output_size(self.padding, self.stride[0], self.dilation[0], height, self.kernel_height)
        out_width = output_size(self.padding, self.stride[1], self.dilation[1], width, self.kernel_width)
        return [(batch, out_height, out_width, self.channels)]

    def run(self, inputs, output_shapes):
        batch, out_height, out_width, channels = output_shapes[0]
        padded = pad_spatial(inputs[0], self.padding, self.stride, self.dilation,
                             (self.kernel_height, self.kernel_width), (out_height, out_width), self.pad_value)
        result = np.empty(output_shapes[0], np.int8)
        chunk = max(1, ACCUMULATORS_PER_CHUNK // max(out_height * out_width * channels, 1))
        for start in range(0, batch, chunk):
            part = padded[start:start + chunk]
            if self.depth_multiplier > 1:
                part = np.repeat(part, self.depth_multiplier, axis=3)
            part = part.astype(self.weights.dtype)
            sums = np.zeros((len(part), out_height, out_width, channels), self.weights.dtype)
            row_stride, column_stride = self.stride
            for tap in range(self.kernel_height * self.kernel_width):
                row = (tap // self.kernel_width) * self.dilation[0]
                column = (tap % self.kernel_width) * self.dilation[1]
                window = part[:, row:row + (out_height - 1) * row_stride + 1:row_stride,
                              column:column + (out_width - 1) * column_stride + 1:column_stride, :]
                sums += window * self.weights[tap]
            result[start:start + chunk] = self.requantize(sums.astype(np.int64))
        return [result]


class FullyConnected(Kernel):
    """FULLY_CONNECTED: int8 input flattened to (rows, K), int8 weights (units, K), int32 bias."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, weights, bias = self.input(0), self.input(1), self.input(2)
        require_type(operator, source, np.int8, "input")
        require_type(operator, weights, np.int8, "weights")
        require_type(operator, self.outputs[0], np.int8, "output")
        require_constant(operator, weights, "weights")
        if bias is not None:
            require_type(operator, bias, np.int32, "bias")
            require_constant(operator, bias, "bias")
        if option(operator, 1, "b") != 0:
            raise UnsupportedModel(f"{operator.name} with shuffled weights is not supported")
        self.keep_num_dims = bool(option(operator, 2, "b"))
        units, self.depth = weights.shape
        # reference_integer_ops::FullyConnected(PerChannel) with float scales: requantized in double.
        self.requantize = PerChannelRequantizer(self, weights.data, None if bias is None else bias.data, source,
                                                weights, self.outputs[0], option(operator, 0, "b"), units,
                                                in_double=True)
        self.weights = prepare_weights(weights.data.T, arithmetic)

    def shapes(self, shapes, values):
        input_shape = shapes[0]
        total = int(np.prod(input_shape, dtype=np.int64))
        if total % self.depth:
            raise ValueError(f"{self.operator.name}: input of {total} values is not a multiple of {self.depth}")
        if self.keep_num_dims:
            return [tuple(input_shape[:-1]) + (self.weights.shape[1],)]
        return [(total // self.depth, self.weights.shape[1])]

    def run(self, inputs, output_shapes):
        rows = inputs[0].reshape(-1, self.depth)
        sums = matmul_exact(rows, self.weights, self.arithmetic)
        return [self.requantize(sums).reshape(output_shapes[0])]


class Pool2D(Kernel):
    """MAX_POOL_2D and AVERAGE_POOL_2D on int8 (input and output share scale and zero point)."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        require_type(operator, self.input(0), np.int8, "input")
        require_type(operator, self.outputs[0], np.int8, "output")
        self.padding, self.stride, self.window, activation = pool_options(operator)
        self.activation_min, self.activation_max = activation_range(operator, activation, self.outputs[0])
        self.average = operator.name == "AVERAGE_POOL_2D"

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        return [(batch, output_size(self.padding, self.stride[0], 1, height, self.window[0]),
                 output_size(self.padding, self.stride[1], 1, width, self.window[1]), channels)]

    def windows(self, padded, out_height, out_width):
        for row in range(self.window[0]):
            for column in range(self.window[1]):
                yield padded[:, row:row + (out_height - 1) * self.stride[0] + 1:self.stride[0],
                             column:column + (out_width - 1) * self.stride[1] + 1:self.stride[1], :]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        _, out_height, out_width, _ = output_shapes[0]
        if not self.average:
            # Positions outside the image are skipped by the reference kernel; -128 never wins a max.
            padded = pad_spatial(source, self.padding, self.stride, (1, 1), self.window, (out_height, out_width), INT8_MIN)
            windows = self.windows(padded, out_height, out_width)
            result = next(windows).copy()
            for window in windows:
                np.maximum(result, window, out=result)
            np.clip(result, self.activation_min, self.activation_max, out=result)
            return [result]
        padded = pad_spatial(source.astype(np.int32), self.padding, self.stride, (1, 1), self.window,
                             (out_height, out_width), 0)
        total = sum(self.windows(padded, out_height, out_width))
        # Only positions inside the image count (the window is clipped at the borders).
        ones = pad_spatial(np.ones((1,) + source.shape[1:3] + (1,), np.int32), self.padding, self.stride, (1, 1),
                           self.window, (out_height, out_width), 0)
        count = sum(self.windows(ones, out_height, out_width))
        # C: acc > 0 ? (acc + n/2) / n : (acc − n/2) / n, with division truncating toward zero.
        half = count // 2
        average = np.where(total > 0, (total + half) // count, -((half - total) // count))
        np.clip(average, self.activation_min, self.activation_max, out=average)
        return [average.astype(np.int8)]


class Mean(Kernel):
    """MEAN over constant axes (GlobalAveragePooling2D), int8: reference_ops::QuantizedMeanOrSum."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, axes, output = self.input(0), self.input(1), self.outputs[0]
        require_type(operator, source, np.int8, "input")
        require_type(operator, output, np.int8, "output")
        require_constant(operator, axes, "axis")
        self.axes_values = [int(axis) for axis in np.ravel(axes.data)]
        self.keep_dims = bool(option(operator, 0, "b"))
        self.multiplier, self.shift = fixed_point.quantize_multiplier(float(source.scale) / float(output.scale))
        self.input_zero_point = source.zero_point
        self.output_zero_point = output.zero_point

    def resolve_axes(self, rank):
        axes = []
        for axis in self.axes_values:
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank:
                raise ValueError(f"{self.operator.name}: axis {axis} out of range for rank {rank}")
            if axis not in axes:
                axes.append(axis)
        return tuple(sorted(axes))

    def shapes(self, shapes, values):
        shape = shapes[0]
        axes = self.resolve_axes(len(shape))
        if self.keep_dims:
            return [tuple(1 if axis in axes else size for axis, size in enumerate(shape))]
        return [tuple(size for axis, size in enumerate(shape) if axis not in axes)]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        axes = self.resolve_axes(source.ndim)
        count = int(np.prod([source.shape[axis] for axis in axes], dtype=np.int64))
        sums = source.sum(axis=axes, dtype=np.int64)
        # The 1/count factor is folded into the multiplier as reduce.h does, shift clamped to keep
        # MultiplyByQuantizedMultiplier within its range.
        shift = min(count.bit_length() - 1, 32, 31 + self.shift)
        multiplier = (self.multiplier << shift) // count
        scaled = fixed_point.multiply_by_quantized_multiplier(
            fixed_point.wrap_int32(sums - self.input_zero_point * count), multiplier, self.shift - shift)
        result = np.clip(scaled + self.output_zero_point, INT8_MIN, INT8_MAX).astype(np.int8)
        return [result.reshape(output_shapes[0])]


class Softmax(Kernel):
    """SOFTMAX int8 → int8 (output scale 1/256, zero point −128), reference_ops::Softmax in fixed point."""

    SCALED_DIFF_INTEGER_BITS = 5
    ACCUMULATION_INTEGER_BITS = 12

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, output = self.input(0), self.outputs[0]
        require_type(operator, source, np.int8, "input")
        require_type(operator, output, np.int8, "output")
        if output.zero_point != -128 or abs(float(output.scale) - 1 / 256) > 0.001 / 256:
            raise UnsupportedModel(f"{operator.name} int8 output must have scale 1/256 and zero point -128")
        beta = float(np.float32(option(operator, 0, "f", 1.0)))
        # PreprocessSoftmaxScaling (quantization_util.cc), all in double; single rounding caps at 2^30.
        cap = (1 << 30) - 1.0 if fixed_point.ROUNDING == "single" else (1 << 31) - 1.0
        real = min(beta * float(source.scale) * (1 << (31 - self.SCALED_DIFF_INTEGER_BITS)), cap)
        self.multiplier, self.left_shift = fixed_point.quantize_multiplier(real)
        # CalculateInputRadius: the most negative input difference whose exp still matters.
        radius = ((1 << self.SCALED_DIFF_INTEGER_BITS) - 1) * (1 << (31 - self.SCALED_DIFF_INTEGER_BITS)) / (1 << self.left_shift)
        self.diff_min = -int(np.floor(radius))

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        source = inputs[0].astype(np.int64)
        difference = source - source.max(axis=-1, keepdims=True)
        counted = difference >= self.diff_min
        scaled = fixed_point.multiply_by_quantized_multiplier_greater_than_one(difference, self.multiplier, self.left_shift)
        exps = fixed_point.exp_on_negative_values(scaled, self.SCALED_DIFF_INTEGER_BITS)
        exps = np.where(counted, exps, 0)
        total = fixed_point.rounding_divide_by_power_of_two(exps, self.ACCUMULATION_INTEGER_BITS).sum(axis=-1, keepdims=True)
        inverse, bits_over_unit = fixed_point.reciprocal(total, self.ACCUMULATION_INTEGER_BITS)
        exponent = bits_over_unit + 31 - 8
        probabilities = fixed_point.rounding_divide_by_power_of_two(
            fixed_point.saturating_rounding_doubling_high_mul(inverse, exps), exponent)
        result = np.clip(probabilities + INT8_MIN, INT8_MIN, INT8_MAX)
        return [np.where(counted, result, INT8_MIN).astype(np.int8)]


class Add(Kernel):
    """ADD of two int8 tensors (broadcasting), rescaled to a common scale with 20 bits of headroom."""

    LEFT_SHIFT = 20

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        first, second, output = self.input(0), self.input(1), self.outputs[0]
        for tensor, role in ((first, "first input"), (second, "second input"), (output, "output")):
            require_type(operator, tensor, np.int8, role)
        twice_max_input_scale = 2 * float(max(first.scale, second.scale))
        self.first = fixed_point.quantize_multiplier(float(first.scale) / twice_max_input_scale)
        self.second = fixed_point.quantize_multiplier(float(second.scale) / twice_max_input_scale)
        self.output = fixed_point.quantize_multiplier(twice_max_input_scale / ((1 << self.LEFT_SHIFT) * float(output.scale)))
        self.zero_points = (first.zero_point, second.zero_point, output.zero_point)
        self.activation_min, self.activation_max = activation_range(operator, option(operator, 0, "b"), output)

    def shapes(self, shapes, values):
        return [tuple(np.broadcast_shapes(tuple(shapes[0]), tuple(shapes[1])))]

    def run(self, inputs, output_shapes):
        scaled = []
        for source, zero_point, (multiplier, shift) in zip(inputs, self.zero_points, (self.first, self.second)):
            shifted = (source.astype(np.int64) - zero_point) << self.LEFT_SHIFT
            scaled.append(fixed_point.multiply_by_quantized_multiplier(shifted, multiplier, shift))
        total = fixed_point.wrap_int32(scaled[0] + scaled[1])
        result = fixed_point.multiply_by_quantized_multiplier(total, *self.output) + self.zero_points[2]
        return [np.clip(result, self.activation_min, self.activation_max).astype(np.int8)]


class Relu(Kernel):
    """RELU, RELU6, RELU_N1_TO_1 on int8: requantize to the output scale, then clamp (ReluX)."""

    BOUNDS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, output = self.input(0), self.outputs[0]
        require_type(operator, source, np.int8, "input")
        require_type(operator, output, np.int8, "output")
        # ReluPrepare: input scale / output scale divided as C floats, then widened to double.
        self.multiplier, self.shift = fixed_point.quantize_multiplier(float(np.float32(source.scale) / np.float32(output.scale)))
        low, high = self.BOUNDS[operator.name]
        self.activation_min = max(INT8_MIN, output.zero_point + round_half_away_from_zero_float32(low, output.scale))
        self.activation_max = INT8_MAX if high is None else min(
            INT8_MAX, output.zero_point + round_half_away_from_zero_float32(high, output.scale))
        self.input_zero_point, self.output_zero_point = source.zero_point, output.zero_point

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        return [fixed_point.requantize_to_int8(inputs[0].astype(np.int64) - self.input_zero_point, self.multiplier,
                                               self.shift, self.output_zero_point, self.activation_min,
                                               self.activation_max)]


class Quantize(Kernel):
    """QUANTIZE: float32 → int8 (round half away from zero), or int8 → int8 with a new scale."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source, output = self.input(0), self.outputs[0]
        require_type(operator, output, np.int8, "output")
        if source.type_name not in ("float32", "int8"):
            raise UnsupportedModel(f"{operator.name} from {source.type_name} is not supported")
        self.from_float = source.type_name == "float32"
        self.output_scale, self.output_zero_point = np.float32(output.scale), output.zero_point
        if not self.from_float:
            self.multiplier, self.shift = fixed_point.quantize_multiplier(float(source.scale) / float(output.scale))
            self.input_zero_point = source.zero_point

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        if self.from_float:
            # AffineQuantize: the quotient is a C float; rounding it in double is exact.
            quotient = (source.astype(np.float32) / self.output_scale).astype(np.float64)
            rounded = np.copysign(np.floor(np.abs(quotient) + 0.5), quotient)
            result = np.clip(rounded + self.output_zero_point, INT8_MIN, INT8_MAX)
            return [result.astype(np.int8)]
        return [fixed_point.requantize_to_int8(source.astype(np.int64) - self.input_zero_point, self.multiplier,
                                               self.shift, self.output_zero_point, INT8_MIN, INT8_MAX)]


class Dequantize(Kernel):
    """DEQUANTIZE int8 → float32: (q − zero point) · scale in double, then rounded to float."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        source = self.input(0)
        require_type(operator, source, np.int8, "input")
        require_type(operator, self.outputs[0], np.float32, "output")
        self.scale, self.zero_point = float(source.scale), source.zero_point

    def shapes(self, shapes, values):
        return [shapes[0]]

    def run(self, inputs, output_shapes):
        return [((inputs[0].astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)]


class Reshape(Kernel):
    """RESHAPE: the new shape from the shape input (often computed from SHAPE), else from the options."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        self.options_shape = None if operator.options is None else [int(v) for v in operator.options.array(0, np.int32)]
        self.model_shape = self.outputs[0].shape

    def shapes(self, shapes, values):
        total = int(np.prod(shapes[0], dtype=np.int64))
        shape_input = self.input(1)
        if shape_input is not None and values.get(shape_input.index) is not None:
            target = [int(v) for v in np.ravel(values[shape_input.index])]
        elif self.options_shape:
            target = list(self.options_shape)
        else:
            target = list(self.model_shape)
            if target and int(np.prod(target, dtype=np.int64)) != total:
                target[0] = -1  # the model was converted for another batch size
        if target.count(-1) == 1:
            known = int(np.prod([size for size in target if size != -1], dtype=np.int64))
            target[target.index(-1)] = total // known if known else 0
        if int(np.prod(target, dtype=np.int64)) != total:
            raise ValueError(f"{self.operator.name}: cannot reshape {list(shapes[0])} to {target}")
        return [tuple(target)]

    def run(self, inputs, output_shapes):
        return [inputs[0].reshape(output_shapes[0])]


class Shape(Kernel):
    """SHAPE: a tensor's shape as int32 (folded: known once tensors are allocated)."""

    folds = True

    def shapes(self, shapes, values):
        self.value = np.array(shapes[0], dtype=np.dtype(self.outputs[0].dtype or np.int32))
        return [self.value.shape]

    def run(self, inputs, output_shapes):
        return [self.value]


class ConstantFolding(Kernel):
    """Ops on shapes and constants (STRIDED_SLICE, PACK, CONCATENATION of int32, ...), folded at allocation."""

    folds = True

    def shapes(self, shapes, values):
        arrays = []
        for tensor in self.inputs:
            value = None if tensor is None else values.get(tensor.index)
            if tensor is not None and value is None:
                raise UnsupportedModel(f"{self.operator.name} on {tensor.type_name} data computed at run time is not supported")
            arrays.append(value)
        self.value = np.asarray(self.compute(arrays))
        return [self.value.shape]

    def run(self, inputs, output_shapes):
        return [self.value]

    def compute(self, arrays):
        name = self.operator.name
        if name == "PACK":
            return np.stack(arrays, axis=option(self.operator, 1, "i"))
        if name == "CONCATENATION":
            return np.concatenate(arrays, axis=option(self.operator, 0, "i"))
        if name == "STRIDED_SLICE":
            return strided_slice(self.operator, *arrays)
        raise UnsupportedModel(f"{name} is not supported")


def strided_slice(operator, source, begin, end, strides):
    """STRIDED_SLICE with begin, end and shrink-axis masks (no ellipsis or new axes)."""
    begin_mask, end_mask = option(operator, 0, "i"), option(operator, 1, "i")
    if option(operator, 2, "i") or option(operator, 3, "i"):
        raise UnsupportedModel(f"{operator.name} with ellipsis or new-axis masks is not supported")
    shrink_mask, offset = option(operator, 4, "i"), bool(option(operator, 5, "b"))
    index = []
    for axis in range(len(begin)):
        start, stop, step = int(begin[axis]), int(end[axis]), int(strides[axis])
        if offset:
            stop += start
        if shrink_mask >> axis & 1:
            index.append(start)
            continue
        index.append(slice(None if begin_mask >> axis & 1 else start, None if end_mask >> axis & 1 else stop, step))
    return np.asarray(source)[tuple(index)]


class Pad(Kernel):
    """PAD / PADV2 of int8 with the output zero point (or the given constant)."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        require_type(operator, self.input(0), np.int8, "input")
        require_constant(operator, self.input(1), "paddings")
        self.paddings = [tuple(int(v) for v in row) for row in self.input(1).data.reshape(-1, 2)]
        constant = self.input(2)
        self.value = self.outputs[0].zero_point if constant is None else int(np.ravel(constant.data)[0])

    def shapes(self, shapes, values):
        return [tuple(size + before + after for size, (before, after) in zip(shapes[0], self.paddings))]

    def run(self, inputs, output_shapes):
        return [np.pad(inputs[0], self.paddings, constant_values=self.value)]


class SpaceToBatch(Kernel):
    """SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND (4-D): how the converter expresses a dilated conv."""

    def __init__(self, operator, tensors, arithmetic):
        super().__init__(operator, tensors, arithmetic)
        require_type(operator, self.input(0), np.int8, "input")
        require_constant(operator, self.input(1), "block shape")
        require_constant(operator, self.input(2), "paddings" if operator.name == "SPACE_TO_BATCH_ND" else "crops")
        self.block = tuple(int(v) for v in np.ravel(self.input(1).data))
        self.edges = [tuple(int(v) for v in row) for row in self.input(2).data.reshape(-1, 2)]
        if len(self.block) != 2:
            raise UnsupportedModel(f"{operator.name} on other than 4-D tensors is not supported")
        self.to_batch = operator.name == "SPACE_TO_BATCH_ND"
        self.pad_value = self.outputs[0].zero_point

    def shapes(self, shapes, values):
        batch, height, width, channels = shapes[0]
        (top, bottom), (left, right) = self.edges
        if self.to_batch:
            return [(batch * self.block[0] * self.block[1], (height + top + bottom) // self.block[0],
                     (width + left + right) // self.block[1], channels)]
        return [(batch // (self.block[0] * self.block[1]), height * self.block[0] - top - bottom,
                 width * self.block[1] - left - right, channels)]

    def run(self, inputs, output_shapes):
        source = inputs[0]
        block_height, block_width = self.block
        (top, bottom), (left, right) = self.edges
        if self.to_batch:
            padded = np.pad(source, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=self.pad_value)
            batch, height, width, channels = padded.shape
            blocks = padded.reshape(batch, height // block_height, block_height, width // block_width, block_width, channels)
            return [blocks.transpose(2, 4, 0, 1, 3, 5).reshape(output_shapes[0])]
        batch, height, width, channels = source.shape
        blocks = source.reshape(block_height, block_width, batch // (block_height * block_width), height, width, channels)
        full = blocks.transpose(2, 3, 0, 4, 1, 5).reshape(-1, height * block_height, width * block_width, channels)
        return [np.ascontiguousarray(full[:, top:top + output_shapes[0][1], left:left + output_shapes[0][2], :])]


KERNELS = {
    "CONV_2D": Conv2D,
    "DEPTHWISE_CONV_2D": DepthwiseConv2D,
    "FULLY_CONNECTED": FullyConnected,
    "MAX_POOL_2D": Pool2D,
    "AVERAGE_POOL_2D": Pool2D,
    "MEAN": Mean,
    "SOFTMAX": Softmax,
    "ADD": Add,
    "RELU": Relu,
    "RELU6": Relu,
    "RELU_N1_TO_1": Relu,
    "QUANTIZE": Quantize,
    "DEQUANTIZE": Dequantize,
    "RESHAPE": Reshape,
    "SHAPE": Shape,
    "STRIDED_SLICE": ConstantFolding,
    "PACK": ConstantFolding,
    "CONCATENATION": ConstantFolding,
    "PAD": Pad,
    "PADV2": Pad,
    "SPACE_TO_BATCH_ND": SpaceToBatch,
    "BATCH_TO_SPACE_ND": SpaceToBatch,
}
