"""Real image files of handwritten digits for tests: MNIST test digits drawn as dark ink on light,
slightly noisy paper, enlarged and placed off-centre in a bigger picture — what a phone photo or
scan of a digit looks like to `predict`. Written with Pillow, in any format it encodes."""

import numpy as np


def photo_of(digit, rng, scale=8, canvas=(400, 360), paper=0.92, ink=0.12, noise=0.02):
    """Return a uint8 (H, W) picture of a 28×28 uint8 MNIST `digit`, inverted onto paper."""
    from PIL import Image

    size = 28 * scale
    enlarged = np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    picture = np.zeros(canvas, dtype=np.float32)
    top, left = rng.integers(0, canvas[0] - size), rng.integers(0, canvas[1] - size)
    picture[top : top + size, left : left + size] = enlarged
    picture = paper - (paper - ink) * picture + rng.normal(0.0, noise, canvas)
    return (np.clip(picture, 0.0, 1.0) * 255).round().astype(np.uint8)


def write_photos(digits, labels, directory, suffix=".jpg", seed=0):
    """Write one file per digit, named `<index>_<label><suffix>`; return the paths in order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (digit, label) in enumerate(zip(digits, labels)):
        path = directory / f"{index:04d}_{int(label)}{suffix}"
        Image.fromarray(photo_of(digit, rng)).save(path)
        paths.append(path)
    return paths
