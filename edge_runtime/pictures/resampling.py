"""Resizing pixel arrays with numpy alone: whole-block means, exact area averaging, linear enlarging.

No matrix products: BLAS would cost every `predict`'s start more than the resizing itself.
"""

import numpy as np


def block_mean(pixels, factor):
    """Average `factor`×`factor` blocks of an (H, W[, C]) array; blocks cut by the edge average what they hold.

    Summed as factor² strided slices: numpy reduces those far faster than a (rows, factor, columns,
    factor) view over its two short axes.
    """
    if factor == 1:
        return pixels.astype(np.float32, copy=False)
    height, width = pixels.shape[:2]
    rows, columns = -(-height // factor), -(-width // factor)
    sums = np.zeros((rows, columns, *pixels.shape[2:]), dtype=np.float32)
    for down in range(factor):
        for right in range(factor):
            part = pixels[down::factor, right::factor]
            sums[: part.shape[0], : part.shape[1]] += part
    if height % factor == 0 and width % factor == 0:
        return sums / np.float32(factor * factor)
    counts = np.outer(np.minimum(factor, height - np.arange(rows) * factor),
                      np.minimum(factor, width - np.arange(columns) * factor)).astype(np.float32)
    return sums / (counts if pixels.ndim == 2 else counts[..., None])


def resample(image, height, width):
    """Resize a 2-D array with numpy alone: area averaging when shrinking, linear when enlarging.

    No matrix products: BLAS would cost every `predict`'s start more than the resizing itself.
    """
    return resample_axis(resample_axis(image, height, axis=0), width, axis=1)


def resample_channels(picture, height, width):
    """`resample` for a grey (H, W) or colour (H, W, C) picture."""
    if picture.ndim == 2:
        return resample(picture, height, width)
    return np.stack([resample(picture[..., channel], height, width) for channel in range(picture.shape[2])], axis=2)


def resample_axis(image, size, axis):
    old = image.shape[axis]
    if size == old:
        return image
    if size > old:
        return linear_along(image, size, axis)
    if axis == 0:
        return area_average_rows(image, size)
    return np.ascontiguousarray(area_average_rows(image.T, size).T)


AREA_CHUNK = 1 << 16  # values per float64 running sum in area_average_rows: half a megabyte


def area_average_rows(image, size):
    """Shrink a 2-D array along its rows to `size`: each output row is the mean of the input rows it
    covers, weighted by how much of each it covers. Exact, from running sums of the rows (in float64,
    a block of columns at a time) read at the fractional edges of each output row."""
    old, width = image.shape
    edges = np.arange(size + 1) * (old / size)
    whole = np.minimum(np.floor(edges).astype(np.intp), old - 1)
    part = (edges - whole)[:, None]
    spans = (edges[1:] - edges[:-1])[:, None]
    result = np.empty((size, width), dtype=np.float32)
    step = max(1, AREA_CHUNK // (old + 1))
    for start in range(0, width, step):
        block = image[:, start : start + step].astype(np.float64)
        running = np.zeros((old + 1, block.shape[1]))
        np.cumsum(block, axis=0, out=running[1:])
        below = running[whole] + part * block[whole]  # everything above each edge
        result[:, start : start + step] = (below[1:] - below[:-1]) / spans
    return result


def linear_along(image, size, axis):
    """Enlarge a 2-D array along `axis` to `size` by linear interpolation between input pixel centres."""
    old = image.shape[axis]
    centres = np.clip((np.arange(size) + 0.5) * (old / size) - 0.5, 0.0, old - 1)
    low = np.floor(centres).astype(np.intp)
    high = np.minimum(low + 1, old - 1)
    fraction = (centres - low).astype(np.float32)
    fraction = fraction[:, None] if axis == 0 else fraction[None, :]
    low_values, high_values = np.take(image, low, axis=axis), np.take(image, high, axis=axis)
    return (low_values + (high_values - low_values) * fraction).astype(np.float32, copy=False)
