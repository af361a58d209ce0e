"""Digit images from files, made to look like MNIST: what `predict` feeds the model.

MNIST digits are light ink on a black background, cropped to the ink, scaled to fit a 20×20 box
with their aspect ratio kept, and placed in a 28×28 frame so that their centre of mass sits at
pixel (14, 14). A photo or scan of a handwritten digit (dark ink on light paper, any size) goes
through the same steps here: grayscale → invert when the background is light → remove the paper's
level → crop → fit 20×20 → centre by mass → [0, 1] float32. An image that is already 28×28 with a
dark background is MNIST-style input and passes through unchanged (only scaled to [0, 1]).

Reading: PNG, JPEG and the other formats Pillow knows go through Pillow, imported only when such a
file is read; PGM/PPM (P2, P3, P5, P6) and `.npy` need numpy alone. Every problem is an InputError
naming the file: missing, empty, not an image, truncated, too large to decode, blank.
"""

import pathlib
import warnings

import numpy as np

from edge_runtime import errors
from edge_runtime.preprocessing import to_unit_float

# Refused before any pixel is decoded: a 48-megapixel phone photo passes, a 20000×20000 image does not.
MAX_PIXELS = 50_000_000
DIGIT_BOX = 20  # MNIST scales each digit to fit a 20×20 box ...
CENTRE_OF_MASS = (14.0, 14.0)  # ... and puts its centre of mass here (the MNIST test set's mean: 14.0, 14.0).
INK_THRESHOLD = 0.25  # fraction of the ink range above which a pixel counts as part of the digit
MIN_CONTRAST = 0.08  # below this difference between ink and paper the image holds no digit
IMAGE_HEIGHT = IMAGE_WIDTH = 28  # the MNIST frame a digit is placed in
# What `predict DIRECTORY` picks up. Which decoder reads a file is decided by its content, not its name.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".npy"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L" conversion


def load_images(paths, names=None):
    """Read image files and prepare each as an MNIST digit: (float32 (N, 28, 28), names).

    A shorthand for `edge_runtime.preparation.prepare_files` with the digit preparation.
    """
    from edge_runtime import preparation

    batch, image_names = preparation.prepare_files(
        list(paths), preparation.Preparation("digit", "light-on-dark", (IMAGE_HEIGHT, IMAGE_WIDTH, 1)), names)
    return batch[..., 0], image_names


def read_image(path, name=None):
    """Decode one file to grayscale float32 in [0, 1]: (H, W), or (N, 28, 28) for a .npy batch."""
    picture = read_picture(path, name, mode="L", batch_shape=(IMAGE_HEIGHT, IMAGE_WIDTH, 1))
    return picture[..., 0] if picture.ndim == 4 else picture


def sniff_format(head):
    """The decoder for a file starting with `head`: "npy", "pnm" or "pillow" (everything else)."""
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:2] in (b"P2", b"P3", b"P5", b"P6"):
        return "pnm"
    return "pillow"


def read_picture(source, name=None, mode="L", batch_shape=None):
    """Decode one picture, from a file path or from bytes, to float32 in [0, 1].

    The format is told by the content, once, here: .npy, PGM/PPM, else whatever Pillow knows.
    Returns (H, W) for mode "L" or (H, W, 3) for "RGB"; a .npy batch shaped like `batch_shape`
    (H, W, C), i.e. (N, H, W[, C]), is returned as ready model inputs (N, H, W, C).
    `name` is what error messages call the source (default: its path).
    Raises: InputError naming the source.
    """
    if isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise errors.InputError(f"{name}: no data (empty input), not an image")
    else:
        path = pathlib.Path(source)
        name = name or str(path)
        data = read_file_bytes(path, name)
    kind = sniff_format(data[:8])
    if kind == "npy":
        return read_npy(data, name, mode, batch_shape)
    if kind == "pnm":
        return read_pnm(data, name, mode)
    return read_with_pillow(data, name, mode)


def read_file_bytes(path, name):
    """The bytes of an image file; one-line InputError for every way a path can fail to be one."""
    try:
        if path.is_dir():
            raise errors.InputError(f"{name}: is a directory, not an image file")
        if path.exists() and not path.is_file():
            raise errors.InputError(f"{name}: not a regular file (a device, FIFO or socket), not an image")
        data = path.read_bytes()
    except FileNotFoundError:
        raise errors.InputError(f"{name}: no such file") from None
    except PermissionError:
        raise errors.InputError(f"{name}: permission denied") from None
    except OSError as error:
        raise errors.InputError(f"{name}: cannot read: {error.strerror or error}") from None
    if not data:
        raise errors.InputError(f"{name}: empty file, not an image")
    return data


def check_size(name, height, width):
    if height < 1 or width < 1:
        raise errors.InputError(f"{name}: image has no pixels ({width}×{height})")
    if height * width > MAX_PIXELS:
        raise errors.InputError(
            f"{name}: image is {width}×{height} = {height * width / 1e6:.0f} megapixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f} megapixels allowed; scale it down first"
        )


def read_with_pillow(data, name, mode="L"):
    try:
        import io

        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise errors.InputError(
            f"{name}: decoding this image format needs Pillow: pip install 'mnist-edge[edge]' "
            "(PGM and .npy files need nothing extra)"
        ) from None
    try:
        with warnings.catch_warnings():
            # Pillow warns from its own, larger, limit; ours (MAX_PIXELS) is checked right after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise errors.InputError(f"{name}: not an image (no format Pillow knows)") from None
    except Image.DecompressionBombError as error:  # Pillow's own, larger, limit: also before decoding
        raise errors.InputError(
            f"{name}: image has more than the {MAX_PIXELS / 1e6:.0f} megapixels allowed ({error}); scale it down first"
        ) from None
    except OSError as error:
        raise errors.InputError(f"{name}: cannot read image: {error}") from None
    with image:
        width, height = image.size
        check_size(name, height, width)  # from the header alone: nothing decoded yet
        try:
            if image.format == "JPEG":
                image.draft(mode, (1024, 1024))  # decode large photos at a reduced scale: faster, less memory
            image = ImageOps.exif_transpose(image)  # phone photos: apply the orientation tag
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Drawings with a transparent background: what shows is the ink on white paper.
                rgba = image.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, rgba)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(image, dtype=np.float32)
                top = 65535.0 if pixels.max() > 255 else 255.0
                grey = np.clip(pixels / top, 0.0, 1.0)
                return grey if mode == "L" else np.repeat(grey[..., np.newaxis], 3, axis=2)
            return np.asarray(image.convert(mode), dtype=np.float32) / np.float32(255.0)
        except (OSError, ValueError, SyntaxError) as error:
            raise errors.InputError(f"{name}: corrupt or truncated image data ({error})") from None


def read_pnm(data, name, mode="L"):
    """Netpbm gray (P2 ASCII, P5 binary) and colour (P3, P6) maps, 8 or 16 bits, with numpy only."""
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise errors.InputError(f"{name}: not a PGM/PPM image (magic {magic!r}; P2, P3, P5 or P6 expected)")
    fields, position = [], 2
    while len(fields) < 3:
        while position < len(data) and data[position : position + 1].isspace():
            position += 1
        if data[position : position + 1] == b"#":
            end = data.find(b"\n", position)
            position = len(data) if end < 0 else end + 1
            continue
        start = position
        while position < len(data) and not data[position : position + 1].isspace():
            position += 1
        token = data[start:position]
        if not token:
            raise errors.InputError(f"{name}: truncated PGM/PPM header")
        if not token.isdigit():
            raise errors.InputError(f"{name}: bad PGM/PPM header field {token[:20]!r}")
        fields.append(int(token))
    width, height, maxval = fields
    check_size(name, height, width)
    if not 1 <= maxval <= 65535:
        raise errors.InputError(f"{name}: PGM/PPM maximum value {maxval} is outside 1..65535")
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P5", b"P6"):
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        body = data[position + 1 :]  # exactly one whitespace byte separates the header from the pixels
        if len(body) < count * dtype.itemsize:
            raise errors.InputError(
                f"{name}: truncated pixel data, {len(body)} bytes for {width}×{height} needing {count * dtype.itemsize}"
            )
        values = np.frombuffer(body, dtype=dtype, count=count)
    else:
        tokens = data[position:].split()
        if len(tokens) < count:
            raise errors.InputError(f"{name}: truncated pixel data, {len(tokens)} values for {count}")
        try:
            values = np.array([int(token) for token in tokens[:count]], dtype=np.int64)
        except ValueError:
            raise errors.InputError(f"{name}: non-numeric pixel value in ASCII PGM/PPM") from None
    if values.max(initial=0) > maxval:
        raise errors.InputError(f"{name}: pixel value {values.max()} above the declared maximum {maxval}")
    pixels = values.astype(np.float32).reshape(height, width, channels) / np.float32(maxval)
    if mode == "RGB":
        return np.repeat(pixels, 3, axis=2) if channels == 1 else pixels
    return pixels[..., 0] if channels == 1 else pixels @ LUMA


def read_npy(data, name, mode="L", batch_shape=None):
    """A numpy array: an image (H, W) or (H, W, 1|3|4), or a batch (N, H, W[, C]) shaped like
    `batch_shape` (H, W, C), returned as (N, H, W, C); uint8 or [0, 1] floats; never a pickle."""
    import io

    handle = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except ValueError as error:
        raise errors.InputError(f"{name}: not a valid .npy file ({error})") from None
    if not (dtype == np.uint8 or (dtype.kind == "f" and dtype.itemsize in (2, 4, 8))):
        raise errors.InputError(f"{name}: expected uint8 or float pixels, got dtype {dtype}")
    batch = False
    if batch_shape is not None:
        height, width, channels = batch_shape
        batch = len(shape) in (3, 4) and tuple(shape[1:3]) == (height, width) and (
            shape[3:] == (channels,) or (channels == 1 and len(shape) == 3))
    if batch:
        check_size(name, shape[0] * shape[1], shape[2])
    elif len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        check_size(name, shape[0], shape[1])
    else:
        raise errors.InputError(
            f"{name}: expected an image (H, W), (H, W, 1|3|4) or a batch (N, H, W[, C]) of the model's "
            f"input size, got shape {shape}"
        )
    try:
        handle.seek(0)
        array = np.load(handle, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise errors.InputError(f"{name}: cannot read .npy data ({error})") from None
    array = to_unit_float(array, name)
    if batch:
        return array.reshape(shape[0], *batch_shape)
    if array.ndim == 3:
        array = array[..., 0] if shape[2] == 1 else array[..., :3]
    if mode == "RGB":
        return array if array.ndim == 3 else np.repeat(array[..., np.newaxis], 3, axis=2)
    return array @ LUMA if array.ndim == 3 else array


def border_level(image):
    """The median of the picture's outermost pixels: the level of its background."""
    return float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))


def to_mnist(image, name="image"):
    """Turn a grayscale picture (uint8, or floats in [0, 1]; any size) into a 28×28 MNIST-style digit."""
    image = to_unit_float(image, name)
    if image.ndim != 2 or image.size == 0:
        raise errors.InputError(f"{name}: expected a 2-D grayscale image, got shape {image.shape}")
    light = border_level(image) > 0.5  # mostly light border: dark ink on paper, to be inverted
    if image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and not light:
        return image  # already MNIST-style: unchanged
    ink = 1.0 - image if light else image
    paper = border_level(ink)
    strongest = float(ink.max())
    if strongest - paper < MIN_CONTRAST:
        raise errors.InputError(f"{name}: no digit found (the image is blank or has almost no contrast)")
    ink = np.clip((ink - paper) / (strongest - paper), 0.0, 1.0)
    mask = ink > INK_THRESHOLD
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    ink[ink < INK_THRESHOLD / 2] = 0.0  # paper texture and shadows are not ink
    height, width = ink.shape
    scale = DIGIT_BOX / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    digit = resample(ink, new_height, new_width)
    if digit.max() > 0:
        digit = digit / digit.max()  # full-strength ink, as MNIST's strokes are
    return place_by_centre_of_mass(digit)


def resample(image, height, width):
    """Resize a 2-D array with numpy alone: area averaging when shrinking, linear when enlarging."""
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
    weights = area_weights(old, size) if size < old else linear_weights(old, size)
    return np.tensordot(weights, image, axes=([1], [axis])) if axis == 0 else image @ weights.T


def area_weights(old, new):
    """(new, old) matrix: each output pixel averages the input pixels it covers, by overlap."""
    edges = np.arange(new + 1) * (old / new)
    starts, ends = edges[:-1, None], edges[1:, None]
    left = np.arange(old)[None, :]
    overlap = np.clip(np.minimum(ends, left + 1) - np.maximum(starts, left), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def linear_weights(old, new):
    """(new, old) matrix of linear interpolation between input pixel centres."""
    centres = np.clip((np.arange(new) + 0.5) * (old / new) - 0.5, 0.0, old - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, old - 1)
    fraction = (centres - low).astype(np.float32)
    weights = np.zeros((new, old), dtype=np.float32)
    weights[np.arange(new), low] += 1.0 - fraction
    weights[np.arange(new), high] += fraction
    return weights


def place_by_centre_of_mass(digit):
    """Put `digit` (at most 20×20) in a black 28×28 frame with its centre of mass at (14, 14)."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, columns = np.arange(height), np.arange(width)
    centre_row = float(digit.sum(axis=1) @ rows) / total
    centre_column = float(digit.sum(axis=0) @ columns) / total
    top = int(np.clip(round(CENTRE_OF_MASS[0] - centre_row), 0, IMAGE_HEIGHT - height))
    left = int(np.clip(round(CENTRE_OF_MASS[1] - centre_column), 0, IMAGE_WIDTH - width))
    frame = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.float32)
    frame[top : top + height, left : left + width] = digit
    return np.clip(frame, 0.0, 1.0)
