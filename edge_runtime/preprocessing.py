"""The preprocessing contract shared by training, export and the device: scaling, layout, int8 maths.

Defined once, here, because a model is only as accurate as the agreement between how its inputs
were prepared in training and how they are prepared on the device.
"""

import numpy as np

from edge_runtime import errors

IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
CHANNELS = 1
INPUT_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH, CHANNELS)
LABELS = tuple(str(digit) for digit in range(10))
CONTRACT = {
    "input_range": [0.0, 1.0],
    "scaling": "uint8 pixel / 255",
    "layout": "NHWC",
    "input_shape": list(INPUT_SHAPE),
    "dtype_before_quantization": "float32",
    "foreground": "light digit on dark background, as MNIST",
}


def to_model_input(images, name="input"):
    """Return `images` as float32 (N, 28, 28, 1) in [0, 1], the layout every exported model takes.

    Takes: uint8 pixels (scaled by 1/255) or floats already in [0, 1], shaped (28, 28), (28, 28, 1),
    (N, 28, 28) or (N, 28, 28, 1). `name` is used in error messages (a file name, say).
    Raises: InputError for another shape, a non-numeric dtype, NaN/inf, or floats outside [0, 1].
    """
    array = to_unit_float(images, name)
    if array.shape in ((IMAGE_HEIGHT, IMAGE_WIDTH), INPUT_SHAPE):
        array = array.reshape(1, *INPUT_SHAPE)
    elif array.ndim == 3 and array.shape[1:] == (IMAGE_HEIGHT, IMAGE_WIDTH):
        array = array[..., np.newaxis]
    elif array.ndim != 4 or array.shape[1:] != INPUT_SHAPE:
        raise errors.InputError(
            f"{name}: expected shape (28, 28), (N, 28, 28) or (N, 28, 28, 1), got {array.shape}"
        )
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
    if not np.isfinite(array).all():
        raise errors.InputError(f"{name}: contains NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise errors.InputError(
            f"{name}: float pixels must be in [0, 1], found [{array.min():.3g}, {array.max():.3g}]"
        )
    return array


def quantize(values, scale, zero_point, dtype=np.int8):
    """Affine quantization: q = clip(round(x / scale) + zero_point) in the range of `dtype`.

    `round` is round-half-to-even, as numpy's and TFLite's reference kernels do it.
    """
    if scale <= 0:
        raise ValueError(f"quantization scale must be positive, got {scale}")
    limits = np.iinfo(dtype)
    quantized = np.rint(np.asarray(values, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, limits.min, limits.max).astype(dtype)


def dequantize(quantized, scale, zero_point):
    """Inverse of `quantize`: x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(quantized, dtype=np.int32) - np.int32(zero_point)) * np.float32(scale)).astype(
        np.float32
    )
