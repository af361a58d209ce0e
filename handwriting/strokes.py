"""Digits as pen strokes, for the "drawn with a mouse" style: a few ways of writing each digit as
polylines in a unit box (x right, y down), varied by slant, proportions and a wobbly hand."""

import numpy as np


def arc(centre_x, centre_y, radius_x, radius_y, start_degrees, end_degrees, points=28):
    """Points along an ellipse; angles grow clockwise on screen (y points down)."""
    angles = np.radians(np.linspace(start_degrees, end_degrees, points))
    return [(centre_x + radius_x * np.cos(a), centre_y + radius_y * np.sin(a)) for a in angles]


def figure_eight(points=60):
    angles = np.linspace(0.0, 2 * np.pi, points)
    return [(0.5 + 0.3 * np.sin(2 * a), 0.5 - 0.45 * np.cos(a)) for a in angles]


# Each digit: a list of ways to write it; each way: a list of strokes; each stroke: a list of points.
TEMPLATES = {
    0: [[arc(0.5, 0.5, 0.3, 0.45, -90, 275)], [arc(0.5, 0.5, 0.32, 0.45, -100, 250)]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]], [[(0.32, 0.22), (0.55, 0.05), (0.52, 0.95)]]],
    2: [[arc(0.5, 0.3, 0.28, 0.25, 200, 375) + [(0.2, 0.95), (0.85, 0.95)]],
        [arc(0.48, 0.32, 0.3, 0.27, 190, 390) + [(0.15, 0.93), (0.45, 0.88), (0.9, 0.95)]]],
    3: [[arc(0.5, 0.28, 0.27, 0.23, 210, 450) + arc(0.5, 0.73, 0.3, 0.22, 270, 510)],
        [[(0.2, 0.05), (0.8, 0.05), (0.45, 0.42)] + arc(0.5, 0.7, 0.3, 0.25, 250, 510)]],
    4: [[[(0.6, 0.05), (0.12, 0.65), (0.88, 0.65)], [(0.65, 0.3), (0.65, 0.95)]],
        [[(0.22, 0.05), (0.18, 0.55), (0.85, 0.55)], [(0.7, 0.05), (0.7, 0.95)]]],
    5: [[[(0.8, 0.05), (0.3, 0.05), (0.26, 0.45)] + arc(0.5, 0.68, 0.3, 0.27, 240, 510)],
        [[(0.28, 0.05), (0.25, 0.45)] + arc(0.5, 0.68, 0.3, 0.27, 240, 510), [(0.28, 0.05), (0.82, 0.07)]]],
    6: [[[(0.72, 0.05), (0.45, 0.22), (0.29, 0.5)] + arc(0.5, 0.7, 0.23, 0.24, 180, 545)],
        [[(0.65, 0.03), (0.35, 0.35)] + arc(0.5, 0.7, 0.22, 0.25, 200, 560)]],
    7: [[[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
        [[(0.15, 0.12), (0.85, 0.08), (0.5, 0.95)], [(0.35, 0.5), (0.78, 0.5)]]],
    8: [[figure_eight()], [arc(0.5, 0.27, 0.22, 0.22, 90, 450) + arc(0.5, 0.72, 0.28, 0.23, -90, 270)]],
    9: [[arc(0.5, 0.3, 0.25, 0.23, 0, 365) + [(0.73, 0.6), (0.68, 0.95)]],
        [arc(0.48, 0.28, 0.25, 0.22, -10, 360) + [(0.73, 0.5), (0.65, 0.95)]]],
}


def wobble(stroke, rng, amount):
    """Resample a stroke to even steps and let the hand drift: a smooth random walk across it."""
    points = np.asarray(stroke, dtype=np.float64)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    distance = np.concatenate([[0.0], np.cumsum(steps)])
    samples = np.linspace(0.0, distance[-1], max(8, int(distance[-1] * 60)))
    even = np.stack([np.interp(samples, distance, points[:, axis]) for axis in (0, 1)], axis=1)
    drift = np.cumsum(rng.normal(0.0, amount, even.shape), axis=0)
    drift -= np.linspace(0.0, 1.0, len(even))[:, None] * drift[-1]  # the stroke still ends where it should
    return even + drift


def draw(digit, rng, size=280, pen_width=14):
    """Ink coverage (size, size) float32 of `digit` drawn with a round pen `pen_width` pixels wide."""
    from PIL import Image, ImageDraw

    way = TEMPLATES[digit][int(rng.integers(len(TEMPLATES[digit])))]
    slant, squash = rng.uniform(-0.25, 0.15), rng.uniform(0.6, 1.05)
    margin = rng.uniform(0.1, 0.25) * size
    span = size - 2 * margin
    image = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(image)
    for stroke in way:
        points = wobble(stroke, rng, amount=0.004)
        x = 0.5 + (points[:, 0] - 0.5) * squash - slant * (points[:, 1] - 0.5)
        y = points[:, 1]
        # A mouse reports whole pixels.
        path = [(round(margin + span * px), round(margin + span * py)) for px, py in zip(x, y)]
        pen.line(path, fill=255, width=pen_width, joint="curve")
        for px, py in (path[0], path[-1]):
            radius = pen_width / 2
            pen.ellipse((px - radius, py - radius, px + radius, py + radius), fill=255)
    return np.asarray(image, dtype=np.float32) / 255
