"""A small colour image dataset the tests make themselves: circles, squares and triangles, any colour.

Each 32×32×3 picture holds one filled shape of a random colour, size and position on a random,
noisy background, so that a model must learn the shape, not the colour. Deterministic for a seed.
"""

import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")


def shape_mask(kind, size, centre_row, centre_column, radius):
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = rows - centre_row, columns - centre_column
    if kind == "circle":
        return dy * dy + dx * dx <= radius * radius
    if kind == "square":
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    # An upright triangle: apex at the top, base at the bottom.
    height = 1.8 * radius
    top = centre_row - height / 2
    within = (rows >= top) & (rows <= top + height)
    return within & (np.abs(dx) <= (rows - top) / height * radius * 1.1)


def draw(kind, generator, size=32):
    """One uint8 (size, size, 3) picture of a `kind` shape."""
    background = generator.uniform(0, 255, 3)
    colour = generator.uniform(0, 255, 3)
    while np.abs(colour - background).sum() < 200:  # keep the shape visible against its background
        colour = generator.uniform(0, 255, 3)
    picture = np.empty((size, size, 3), np.float32)
    picture[...] = background
    radius = generator.uniform(0.22, 0.4) * size
    centre = generator.uniform(radius, size - radius, 2)
    picture[shape_mask(kind, size, centre[0], centre[1], radius)] = colour
    picture += generator.normal(0, 8, picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def make_dataset(train_count=3000, test_count=600, seed=0):
    """Return (x_train, y_train, x_test, y_test) in the Keras layout, classes balanced."""
    generator = np.random.default_rng(seed)
    def split(count):
        labels = np.arange(count) % len(CLASS_NAMES)
        generator.shuffle(labels)
        return np.stack([draw(CLASS_NAMES[label], generator) for label in labels]), labels.astype(np.uint8)
    x_train, y_train = split(train_count)
    x_test, y_test = split(test_count)
    return x_train, y_train, x_test, y_test
