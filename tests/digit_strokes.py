"""Pen strokes that redraw an MNIST digit: its skeleton (Zhang–Suen thinning), traced into polylines.

For the browser test, which draws digits on the page's canvas the way a person would: pen down,
move along the stroke, pen up. Each stroke is a list of (row, column) points in the 28×28 grid.
"""

import numpy as np

# The 8 neighbours in the order Zhang and Suen number them, P2..P9, clockwise from north.
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def skeleton(digit, threshold=100):
    """Thin the digit's ink (uint8 pixels above `threshold`) to one-pixel-wide lines; return a bool array.

    Zhang, T. Y. and Suen, C. Y., "A fast parallel algorithm for thinning digital patterns" (1984).
    """
    image = np.pad(np.asarray(digit) > threshold, 1).astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            rows, columns = image.shape
            around = np.stack([np.roll(np.roll(image, -dr, 0), -dc, 1) for dr, dc in NEIGHBOURS])  # P2..P9
            count = around.sum(axis=0)
            transitions = ((around == 0) & (np.roll(around, -1, axis=0) == 1)).sum(axis=0)
            p2, p4, p6, p8 = around[0], around[2], around[4], around[6]
            if step == 0:
                condition = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                condition = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (image == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & condition
            if remove.any():
                image[remove] = 0
                changed = True
    return image[1:-1, 1:-1].astype(bool)


def strokes(digit):
    """Trace the digit's skeleton into strokes: lists of (row, column), each continuing the drawing.

    A stroke starts at a line end where there is one (else anywhere: a loop, as in 0), follows
    unvisited neighbours (straight ones first) until it cannot, and the next stroke starts from a
    drawn pixel next to what is left, so strokes join as a pen's do.
    """
    remaining = {tuple(point) for point in np.argwhere(skeleton(digit))}
    drawn = set()

    def neighbours(point, pool):
        found = [(point[0] + dr, point[1] + dc) for dr, dc in NEIGHBOURS]
        found.sort(key=lambda other: abs(other[0] - point[0]) + abs(other[1] - point[1]))  # straight first
        return [other for other in found if other in pool]

    result = []
    while remaining:
        ends = [point for point in remaining if len(neighbours(point, remaining | drawn)) == 1]
        joined = [point for point in drawn if neighbours(point, remaining)]
        start = min(joined) if joined else min(ends) if ends else min(remaining)
        stroke = [start]
        remaining.discard(start)
        drawn.add(start)
        while True:
            following = neighbours(stroke[-1], remaining)
            if not following:
                break
            stroke.append(following[0])
            remaining.discard(following[0])
            drawn.add(following[0])
        result.append(stroke)
    return result
