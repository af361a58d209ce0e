"""From a decoded picture to the model's input: the image preparation the manifest names.

- "digit": for MNIST-like digit models. The picture is made to look like an MNIST digit (see
  `edge_runtime.pictures.digit.to_mnist`: invert dark-on-light, crop to the ink, fit a 20×20 box, centre
  by mass in 28×28), then resized to the model's input if that is not 28×28.
- "plain": for every other image classifier. The whole picture, padded to the model's aspect ratio
  with its own background level (so nothing is stretched), resized to the model's input size, in
  grey or colour as the model takes, and inverted when its polarity is the opposite of the
  training data's (a dark trouser photographed on white paper, for a model trained on
  Fashion-MNIST's light-on-black garments).
"""

import numpy as np

from edge_runtime import errors, manifest as manifest_module
from edge_runtime.pictures import decoding, digit, resampling


class Preparation:
    """One way of turning pictures into inputs of shape `input_shape` (H, W, C)."""

    __slots__ = ("name", "polarity", "input_shape")

    def __init__(self, name, polarity, input_shape):
        if name not in manifest_module.PREPARATIONS:
            raise ValueError(f"unknown image preparation {name!r}")
        if polarity not in manifest_module.POLARITIES:
            raise ValueError(f"unknown polarity {polarity!r}")
        self.name, self.polarity, self.input_shape = name, polarity, tuple(int(n) for n in input_shape)
        if name == "digit" and self.input_shape[2] != 1:
            raise ValueError(f"the digit preparation makes grey images; this model takes {self.input_shape}")

    @property
    def colour(self):
        return self.input_shape[2] == 3

    def __call__(self, picture, name="image"):
        """Turn one decoded picture (float32 (H, W) grey or (H, W, 3) RGB in [0, 1]) into a model input."""
        height, width, channels = self.input_shape
        if self.name == "digit":
            mnist_digit = digit.to_mnist(to_grey(picture), name=name)
            if mnist_digit.shape != (height, width):
                mnist_digit = resampling.resample(mnist_digit, height, width)
            return mnist_digit.reshape(height, width, 1)
        picture = to_grey(picture) if channels == 1 else to_colour(picture)
        picture = self.match_polarity(picture)
        picture = pad_to_aspect(picture, height / width)
        resized = resampling.resample_channels(picture, height, width)
        return np.clip(resized, 0.0, 1.0).reshape(height, width, channels).astype(np.float32)

    def match_polarity(self, picture):
        if self.polarity == "as-is":
            return picture
        light_background = digit.border_level(to_grey(picture)) > 0.5
        wanted_light = self.polarity == "dark-on-light"
        return picture if light_background == wanted_light else 1.0 - picture


def for_classifier(model):
    """The preparation a loaded Classifier expects (see `for_model`)."""
    return for_model(model.manifest, model.input_shape)


def for_model(manifest, input_shape):
    """The preparation a model expects: the manifest's, or without one a guess said in the name.

    Without a manifest a model whose input is one MNIST frame (digit.FRAME_SIDE square, grey) is
    taken for an MNIST digit model, and anything else
    gets the plain preparation with the picture's polarity left as it is.
    """
    if manifest is not None:
        return Preparation(manifest.preparation, manifest.polarity, input_shape)
    if tuple(input_shape) == (digit.FRAME_SIDE, digit.FRAME_SIDE, 1):
        return Preparation("digit", "light-on-dark", input_shape)
    return Preparation("plain", "as-is", input_shape)


def to_grey(picture):
    if picture.ndim == 2:
        return picture
    return picture @ decoding.LUMA


def to_colour(picture):
    if picture.ndim == 3:
        return picture
    return np.repeat(picture[..., np.newaxis], 3, axis=2)


def pad_to_aspect(picture, aspect):
    """Pad `picture` with its border level so that height / width == `aspect` (to the nearest pixel)."""
    height, width = picture.shape[:2]
    level = digit.border_level(to_grey(picture))
    if picture.ndim == 3:
        level = digit.median(np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]]), axis=0)
    target_height = max(height, int(round(width * aspect)))
    target_width = max(width, int(round(height / aspect)))
    if (target_height, target_width) == (height, width):
        return picture
    canvas = np.empty((target_height, target_width) + picture.shape[2:], dtype=np.float32)
    canvas[...] = level
    top, left = (target_height - height) // 2, (target_width - width) // 2
    canvas[top : top + height, left : left + width] = picture
    return canvas


def prepare_files(sources, preparation, names=None):
    """Decode and prepare image files for a model; return (float32 (N, H, W, C), names).

    Takes: paths or bytes (see `edge_runtime.pictures.decoding.read_picture`); a .npy batch already shaped
    like the model's input contributes each of its images as they are.
    Raises: InputError naming the file.
    """
    names = [str(source) if not isinstance(source, bytes) else "<bytes>" for source in sources] if names is None else list(names)
    prepared, image_names = [], []
    mode = "RGB" if preparation.colour else "L"
    for source, name in zip(sources, names):
        picture = decoding.read_picture(source, name, mode=mode, batch_shape=preparation.input_shape)
        if picture.ndim == 4:  # a .npy batch of ready model inputs
            for index, image in enumerate(picture):
                image_names.append(f"{name}[{index}]")
                prepared.append(image)
            continue
        image_names.append(name)
        prepared.append(preparation(picture, name=name))
    if not prepared:
        raise errors.InputError("no image files given")
    return np.stack(prepared).astype(np.float32, copy=False), image_names


def load_digits(paths, names=None):
    """Read image files and prepare each as an MNIST digit: (float32 (N, 28, 28), names).

    `prepare_files` with the digit preparation for an MNIST-size model; a `.npy` batch (N, 28, 28)
    contributes its N images as they are.
    """
    side = digit.FRAME_SIDE
    batch, image_names = prepare_files(list(paths), Preparation("digit", "light-on-dark", (side, side, 1)), names)
    return batch[..., 0], image_names
