"""A picture of a digit made to look like an MNIST digit (`to_mnist`): the "digit" preparation.

MNIST's digits were written with a pen, scanned in black and white, scaled into a 20×20 box (the
scaling's anti-aliasing gives their grey edges) and placed in a 28×28 frame with their centre of
mass at (14, 14). So: even out the light over the paper; take the ink; keep the digit's strokes
(large connected pieces), not specks; draw it at four times the final size with sharp edges, put at
an ink level chosen so the strokes are about as wide as MNIST's (a blurred scan's strokes are
otherwise bold with a grey halo); shrink into the 20×20 box by averaging; centre by mass. A 28×28
image with a dark background is already MNIST-style and passes through unchanged (only scaled to
[0, 1]).
"""

import math

import numpy as np

from edge_runtime import errors
from edge_runtime.pictures.resampling import block_mean, resample
from edge_runtime.preprocessing import to_unit_float

DIGIT_BOX = 20  # MNIST scales each digit to fit a 20×20 box ...
CENTRE_OF_MASS = (14.0, 14.0)  # ... and puts its centre of mass here (the MNIST test set's mean: 14.0, 14.0).
OVERSAMPLING = 4  # the digit is drawn with sharp edges at 4 × 20 pixels, then averaged down, as MNIST's were
MIN_CONTRAST = 0.08  # below this difference between ink and paper the image holds no digit
INK_LEVELS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # where a stroke's edge may be drawn, as fractions of the ink's strength
EDGE_SOFTNESS = 0.2  # ... and the range of ink levels (same unit) over which the edge goes from paper to full ink
# MNIST's stroke widths, in pixels of the 20×20 box, measured as 2 × area / perimeter of the digit drawn
# at 4× and cut at half strength: 5th-95th percentiles 1.2-2.9, median 1.8 (test set). Strokes are
# drawn at the ink level that brings them into STROKE_TARGET, then thinned or thickened into STROKE_LIMITS.
STROKE_TARGET = (1.6, 2.4)
STROKE_LIMITS = (1.4, 2.8)
PIECE_SHARE = 0.05  # connected pieces of ink with less than this share of the largest piece's ink are specks
PAPER_BLOCKS = 16  # the light over the page is estimated on a grid this many blocks across its shorter side
UNEVEN_LIGHT = 0.12  # paper levels along the border differing by more than this fraction: uneven light
FRAME_SIDE = 28  # the MNIST frame a digit is placed in


def percentile(values, percents, axis=None):
    """numpy's default ("linear") percentiles, by np.partition.

    np.percentile and np.median import numpy.ma on first use: 6 ms and 1 MiB of every `predict`'s
    start, for the few order statistics a picture needs. Takes one percent or a list of them; with
    `axis`, along that axis.
    """
    array = np.asarray(values, dtype=np.float32)
    array = array.reshape(-1) if axis is None else np.moveaxis(array, axis, -1)
    count = array.shape[-1]
    single = np.ndim(percents) == 0
    positions = np.atleast_1d(np.asarray(percents, dtype=np.float64)) / 100.0 * (count - 1)
    low = np.floor(positions).astype(np.intp)
    high = np.minimum(low + 1, count - 1)
    ordered = np.partition(array, sorted(set(low.tolist()) | set(high.tolist())), axis=-1)  # np.unique imports numpy.ma too
    below, above = ordered[..., low], ordered[..., high]
    result = below + (above - below) * (positions - low).astype(np.float32)
    result = np.moveaxis(result, -1, 0)
    return result[0] if single else result


def median(values, axis=None):
    return percentile(values, 50, axis=axis)


def border_level(image):
    """The median of the picture's outermost pixels: the level of its background."""
    return float(median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))


def to_mnist(image, name="image"):
    """Turn a grayscale picture (uint8, or floats in [0, 1]; any size) into a 28×28 MNIST-style digit:
    float32, light ink on black, in [0, 1]. Raises: InputError for a wrong shape or no digit."""
    image = to_unit_float(image, name)
    if image.ndim != 2 or image.size == 0:
        raise errors.InputError(f"{name}: expected a 2-D grayscale image, got shape {image.shape}")
    paper = border_level(image)
    if image.shape == (FRAME_SIDE, FRAME_SIDE) and paper <= 0.5:
        return image  # already MNIST-style: unchanged
    # The digit is found on a half-size copy (less noise, a quarter of the memory), then cut from the picture.
    step = 2 if min(image.shape) > 64 else 1
    small = block_mean(image, step)
    darkest, lightest = percentile(small, [0.1, 99.9])
    # The ink is what stands out from the paper, darker or lighter; when neither side clearly does
    # (a small digit, noisy paper), a light border means dark ink.
    dark_side, light_side = paper - darkest, lightest - paper
    dark_ink = dark_side > light_side if abs(dark_side - light_side) > MIN_CONTRAST else paper > 0.5
    level = paper_level(small, dark_ink)
    small_ink = ink_over_paper(small, level, dark_ink)
    strength = float(small_ink.max())
    if strength < MIN_CONTRAST:
        raise errors.InputError(f"{name}: no digit found (the image is blank or has almost no contrast)")
    (top, bottom, left, right), dropped = digit_pieces(small_ink > 0.5 * strength, small_ink)
    crop = image[top * step : bottom * step, left * step : right * step]

    def enlarge(array):  # half-size → the crop's size
        return np.repeat(np.repeat(array, step, axis=0), step, axis=1)[: crop.shape[0], : crop.shape[1]]

    if np.ndim(level):
        level = enlarge(level[top:bottom, left:right])
    ink = ink_over_paper(crop, level, dark_ink)
    ink[enlarge(dropped)] = 0.0
    strokes = draw_strokes(ink, strength)
    height, width = strokes.shape
    scale = DIGIT_BOX / max(height, width)
    digit = resample(strokes.astype(np.float32), max(1, round(height * scale)), max(1, round(width * scale)))
    return place_by_centre_of_mass(digit / digit.max())


def ink_over_paper(image, level, dark_ink):
    """Ink strength in [0, 1] (0 = paper) with the light evened out: the picture divided by the paper's
    `level` (a number or a map) where the paper is light, the level subtracted where it is dark."""
    if dark_ink:
        ink = image / np.maximum(level, np.float32(0.05))
        np.subtract(np.float32(1.0), ink, out=ink)
    else:
        ink = image - level
    return np.clip(ink, 0.0, 1.0, out=ink).astype(np.float32, copy=False)


def paper_level(image, dark_ink):
    """The paper's level: one number when the light along the border is even, else a smooth map.

    On a grid of blocks, a block's paper is its lightest tenth (darkest, for light ink); the median of
    the 5×5 blocks around it keeps a stroke that fills a block from being taken for paper while a
    shadow's edge stays sharp.
    """
    height, width = image.shape
    block = max(8, min(height, width) // PAPER_BLOCKS)
    rows, columns = max(1, height // block), max(1, width // block)
    block_height, block_width = height // rows, width // columns
    blocks = image[: rows * block_height, : columns * block_width].reshape(rows, block_height, columns, block_width)
    level = percentile(blocks.transpose(0, 2, 1, 3).reshape(rows, columns, -1), 90 if dark_ink else 10, axis=2)
    if min(rows, columns) < 4:  # too small a picture to see the light change across it
        return np.float32(border_level(image))
    border = np.concatenate([level[0], level[-1], level[:, 0], level[:, -1]])
    low, high = percentile(border, [10, 90])
    if high - low <= UNEVEN_LIGHT * max(high, 0.05):
        return np.float32(median(border))
    padded = np.pad(level, 2, mode="edge")
    around = [padded[2 + down : 2 + down + rows, 2 + right : 2 + right + columns]
              for down in range(-2, 3) for right in range(-2, 3)]
    return resample(median(np.stack(around), axis=0).astype(np.float32), height, width)


def digit_pieces(mask, weight):
    """The digit's box (top, bottom, left, right; one pixel of margin) around the pieces of `mask`
    (8-connected) holding at least PIECE_SHARE of the largest piece's `weight`, and the mask, within
    that box, of the smaller pieces (specks, dirt) to remove."""
    labels, count = connected_pieces(mask)
    mass = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=count + 1)[1:]
    kept = np.zeros(count + 1, dtype=bool)
    kept[1:] = mass >= PIECE_SHARE * mass.max()
    kept = kept[labels]
    rows, columns = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    top, bottom = max(0, rows[0] - 1), min(mask.shape[0], rows[-1] + 2)
    left, right = max(0, columns[0] - 1), min(mask.shape[1], columns[-1] + 2)
    return (top, bottom, left, right), mask[top:bottom, left:right] & ~kept[top:bottom, left:right]


def connected_pieces(mask):
    """Label the 8-connected pieces of a boolean mask: (labels int32, 0 = background, number of pieces).

    Works on runs of set pixels along rows (few, for a digit), joined with those touching them in the
    row above through a union-find.
    """
    height, width = mask.shape
    framed = np.zeros((height, width + 2), dtype=np.int8)
    framed[:, 1:-1] = mask
    edges = np.diff(framed, axis=1)
    run_rows, run_starts = np.nonzero(edges == 1)
    run_ends = np.nonzero(edges == -1)[1]  # exclusive
    parent = list(range(len(run_rows)))

    def root(run):
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    first_run = np.searchsorted(run_rows, np.arange(height + 1))
    for row in range(1, height):
        above, above_end = first_run[row - 1], first_run[row]
        here, here_end = first_run[row], first_run[row + 1]
        while above < above_end and here < here_end:
            if run_starts[here] <= run_ends[above] and run_starts[above] <= run_ends[here]:  # touch, diagonals too
                a, b = root(above), root(here)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if run_ends[above] < run_ends[here]:
                above += 1
            else:
                here += 1
    pieces = {}  # a piece's root run → its label, 1, 2, ... in the order the pieces' first runs come
    labels = np.zeros((height, width), dtype=np.int32)
    for run, (row, start, end) in enumerate(zip(run_rows, run_starts, run_ends)):
        labels[row, start:end] = pieces.setdefault(root(run), len(pieces) + 1)
    return labels, len(pieces)


def draw_strokes(ink, strength):
    """The digit at OVERSAMPLING × DIGIT_BOX pixels (its longer side), cropped to it, floats in [0, 1].

    The edge of a stroke is put at the ink level (of INK_LEVELS) that makes strokes about as wide as
    MNIST's: a high level for a bold, blurred stroke, lower for a thin or faint one. Ink goes from
    none to full over EDGE_SOFTNESS of the ink's strength around that level: weak ink (a blur's halo,
    the paper's grain) is dropped, and the edge keeps a little of the picture's own shading. Strokes
    still outside STROKE_LIMITS are thinned or thickened with a round brush, in black and white.
    """
    box = OVERSAMPLING * DIGIT_BOX
    scale = box / max(ink.shape)
    large = resample(ink, max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    large /= np.float32(strength)
    best = None
    for level in INK_LEVELS:
        strokes = crop_to_ink(large > level)
        if strokes is None:
            continue
        width = stroke_width(strokes)
        miss = max(STROKE_TARGET[0] - width, width - STROKE_TARGET[1], 0.0) + 0.01 * abs(level - 0.5)
        if best is None or miss < best[0]:
            best = (miss, strokes, width, level)
    _, strokes, width, level = best
    low, high = STROKE_LIMITS
    if width > high or width < low:
        radius = abs(width - (high if width > high else low)) * OVERSAMPLING * max(strokes.shape) / box / 2
        changed = crop_to_ink(round_brush(strokes, radius, thicken=width < low))
        return strokes if changed is None else changed
    soft = np.clip((large - level) / EDGE_SOFTNESS + 0.5, 0.0, 1.0)
    rows, columns = np.flatnonzero(soft.any(axis=1)), np.flatnonzero(soft.any(axis=0))
    return soft[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def crop_to_ink(mask):
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return mask[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def stroke_width(strokes):
    """Mean stroke width in pixels of the 20×20 box: 2 × area / perimeter (a long stroke's perimeter is
    twice its length), the perimeter counted as pixel edges between ink and paper."""
    padded = np.zeros((strokes.shape[0] + 2, strokes.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = strokes
    perimeter = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    return 2.0 * np.count_nonzero(strokes) / max(perimeter, 1) * DIGIT_BOX / max(strokes.shape)


def round_brush(mask, radius, thicken):
    """Dilate (thicken) or erode a mask with a disc of `radius` pixels."""
    reach = int(math.ceil(radius))
    height, width = mask.shape
    padded = np.full((height + 2 * reach, width + 2 * reach), not thicken, dtype=bool)
    padded[reach : reach + height, reach : reach + width] = mask
    result = mask.copy()
    for down in range(-reach, reach + 1):
        for right in range(-reach, reach + 1):
            if (down or right) and down * down + right * right <= radius * radius:
                shifted = padded[reach + down : reach + down + height, reach + right : reach + right + width]
                result = result | shifted if thicken else result & shifted
    return result


def place_by_centre_of_mass(digit):
    """Put `digit` (at most 20×20) in a black 28×28 frame with its centre of mass at (14, 14)."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, columns = np.arange(height), np.arange(width)
    centre_row = float(digit.sum(axis=1) @ rows) / total
    centre_column = float(digit.sum(axis=0) @ columns) / total
    top = int(np.clip(round(CENTRE_OF_MASS[0] - centre_row), 0, FRAME_SIDE - height))
    left = int(np.clip(round(CENTRE_OF_MASS[1] - centre_column), 0, FRAME_SIDE - width))
    frame = np.zeros((FRAME_SIDE, FRAME_SIDE), dtype=np.float32)
    frame[top : top + height, left : left + width] = digit
    return np.clip(frame, 0.0, 1.0)
