"""The preprocessing contract shared by training, export and the device: scaling, layout, int8 maths.

Defined once, here, because a model is only as accurate as the agreement between how its inputs
were prepared in training and how they are prepared on the device. The input shape is not a
constant of this module: it is the model's own (read from its input tensor) or the data's.
"""

import math

import numpy as np

from edge_runtime import errors

LAYOUT = "NHWC"
SCALING = "uint8 / 255"


def to_model_input(images, input_shape, name="input"):
    """Return `images` as float32 (N, H, W, C) in [0, 1], the layout every exported model takes.

    Takes: uint8 pixels (scaled by 1/255) or floats already in [0, 1], shaped (H, W), (H, W, C),
    (N, H, W) or (N, H, W, C), and the model's `input_shape` (H, W, C). A missing channel axis is
    allowed when C is 1. `name` is used in error messages (a file name, say).
    Raises: InputError for another shape, a non-numeric dtype, NaN/inf, or floats outside [0, 1].
    """
    return as_batch(to_unit_float(images, name), input_shape, name)


def as_batch(array, input_shape, name="input"):
    """Reshape an array of pixels (any dtype) to (N, H, W, C); InputError naming `name` if it cannot be."""
    input_shape = tuple(int(size) for size in input_shape)
    height, width, channels = input_shape
    if array.shape == input_shape or (channels == 1 and array.shape == (height, width)):
        array = array.reshape(1, *input_shape)
    elif channels == 1 and array.ndim == 3 and array.shape[1:] == (height, width):
        array = array[..., np.newaxis]
    elif array.ndim != 4 or array.shape[1:] != input_shape:
        expected = f"({height}, {width}, {channels}) or (N, {height}, {width}, {channels})"
        if channels == 1:
            expected = f"({height}, {width}), (N, {height}, {width}) or (N, {height}, {width}, 1)"
        raise errors.InputError(f"{name}: expected shape {expected}, got {array.shape}")
    if array.shape[0] == 0:
        raise errors.InputError(f"{name}: no images (empty batch)")
    return array


def to_unit_float(pixels, name="input"):
    """Return `pixels` (any shape) as float32 in [0, 1]: uint8 scaled by 1/255, floats checked as they are.

    Raises: InputError for another dtype, NaN/inf, or floats outside [0, 1].
    """
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise errors.InputError(f"{name}: expected uint8 or float pixels, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not array.size:
        return array
    lowest, highest = float(array.min()), float(array.max())  # NaN anywhere makes both NaN
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        raise errors.InputError(f"{name}: contains NaN or infinite values")
    if lowest < 0.0 or highest > 1.0:
        raise errors.InputError(f"{name}: float pixels must be in [0, 1], found [{lowest:.3g}, {highest:.3g}]")
    return array


def quantize(values, scale, zero_point, dtype=np.int8):
    """Affine quantization: q = clip(round(x / scale) + zero_point) in the range of `dtype`.

    `round` is half away from zero, as TFLite's QUANTIZE kernel does it (TfLiteRound, i.e. C's
    round()), not numpy's half to even: the two differ exactly on the ties, and a uint8 pixel
    divided by 255 and then by a scale of 1/255 lands on them.
    """
    if not scale > 0:
        raise ValueError(f"quantization scale must be positive, got {scale}")
    limits = np.iinfo(dtype)
    # The division in float32, as the kernel does it; the +0.5 in float64, where it is exact for
    # every float32 (in float32, 0.49999997 + 0.5 would round up to 1).
    scaled = (np.asarray(values, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, limits.min, limits.max).astype(dtype)


def dequantize(quantized, scale, zero_point):
    """Inverse of `quantize`: x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(quantized, dtype=np.int32) - np.int32(zero_point)) * np.float32(scale)).astype(
        np.float32
    )
