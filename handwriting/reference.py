"""The reference digit preparation `predict` is measured against: short and plain on purpose.

Median paper level, weak ink zeroed, Lanczos resize into a 20×20 box, shift by centre of mass: the
steps the MNIST paper describes, with nothing tuned. `predict` should be at least as accurate.
"""

import numpy as np

from edge_runtime.pictures.digit import FRAME_SIDE

WEAK_INK = 0.3  # ink below this fraction of the strongest is paper texture, noise or halo


def prepare(path):
    """A file (anything Pillow reads) → float32 (FRAME_SIDE, FRAME_SIDE), MNIST's frame, in [0, 1], light digit on black."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGBA")
        gray = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("L")
    pixels = np.asarray(gray, dtype=np.float32) / 255
    paper = float(np.median(pixels))
    ink = paper - pixels if paper > 0.5 else pixels - paper
    ink = np.clip(ink / max(float(ink.max()), 1e-6), 0.0, 1.0)
    ink[ink < WEAK_INK] = 0.0
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    scale = 20 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.LANCZOS)), 0.0, 1.0)
    frame = np.zeros((FRAME_SIDE, FRAME_SIDE), dtype=np.float32)
    top, left = (FRAME_SIDE - digit.shape[0]) // 2, (FRAME_SIDE - digit.shape[1]) // 2
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    row_indices, column_indices = np.indices(frame.shape)
    shift_rows = int(round(FRAME_SIDE / 2 - (row_indices * frame).sum() / frame.sum()))
    shift_columns = int(round(FRAME_SIDE / 2 - (column_indices * frame).sum() / frame.sum()))
    return np.roll(frame, (shift_rows, shift_columns), axis=(0, 1))
