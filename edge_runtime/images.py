"""Digit images from files, made to look like MNIST: what `predict` feeds the model.

Two steps, kept apart so that a model of another kind can reuse the first:

- `read_image` decodes a file to grayscale (or RGB) floats in [0, 1]. A large picture is reduced
  *while it is decoded* (JPEG's DCT scaling, PNG and PGM a strip of rows at a time, averaged in
  whole blocks) until its longer side is at most WORKING_SIDE pixels, so memory stays bounded and
  a 12-megapixel photo looks the same to what follows as the same photo at 3 or 1 megapixels.
- `to_mnist` turns a picture of a digit into an MNIST digit. MNIST's digits were written with a pen,
  scanned in black and white, scaled into a 20×20 box (the scaling's anti-aliasing gives their
  grey edges) and placed in a 28×28 frame with their centre of mass at (14, 14). So: even out the
  light over the paper; take the ink; keep the digit's strokes (large connected pieces), not specks;
  draw it at four times the final size with sharp edges, put at an ink level chosen so the strokes
  are about as wide as MNIST's (a blurred scan's strokes are otherwise bold with a grey halo); shrink
  into the 20×20 box by averaging; centre by mass. A 28×28 image with a dark background is already
  MNIST-style and passes through unchanged (only scaled to [0, 1]).

Which decoder reads a file is told by its content, once (`read_picture`), not by its name. PNG,
JPEG and the other formats Pillow knows need Pillow, imported only when such a file is read;
PGM/PPM (P2, P3, P5, P6) and `.npy` need numpy alone. Bytes (stdin, an upload) are read the same
way. Every problem is an InputError naming the file: missing, unreadable, empty, not an image,
truncated, too large to decode, blank.
"""

import math
import os
import pathlib
import stat
import warnings

import numpy as np

from edge_runtime import errors
from edge_runtime.preprocessing import to_unit_float

# Refused before any pixel is decoded: a 48-megapixel phone photo passes, a 20000×20000 image does not.
MAX_PIXELS = 50_000_000
# Pictures are decoded at most this large (longer side); a digit needs far fewer pixels than a photo has.
WORKING_SIDE = 1024
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
IMAGE_HEIGHT = IMAGE_WIDTH = 28  # the MNIST frame a digit is placed in
# What `predict DIRECTORY` picks up (the decoder is still chosen by the content).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".npy"}
PNM_MAGICS = (b"P2", b"P3", b"P5", b"P6")
NPY_MAGIC = b"\x93NUMPY"
STRIP_PIXELS = 1 << 17  # large pictures are decoded about this many pixels at a time
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L" conversion
MODES = ("L", "RGB")


def load_images(paths, names=None):
    """Read image files and prepare each as an MNIST digit: (float32 (N, 28, 28), names).

    A shorthand for `edge_runtime.preparation.prepare_files` with the digit preparation; a `.npy`
    batch (N, 28, 28) contributes its N images as they are.
    """
    from edge_runtime import preparation

    batch, image_names = preparation.prepare_files(
        list(paths), preparation.Preparation("digit", "light-on-dark", (IMAGE_HEIGHT, IMAGE_WIDTH, 1)), names)
    return batch[..., 0], image_names


# ---------------------------------------------------------------------------------------- decoding


def read_picture(source, name=None, mode="L", batch_shape=None, max_side=WORKING_SIDE):
    """Decode one picture, from a file path or from bytes, to float32 in [0, 1].

    Takes: the path or the bytes; `name`, what error messages call it (default: the path, or
    "<bytes>"); `mode` "L" (grayscale, (H, W)) or "RGB" ((H, W, 3)); `batch_shape` (H, W, C): a
    .npy array shaped (N, H, W[, C]) like it holds ready model inputs and is returned as
    (N, H, W, C); `max_side`: a picture whose longer side is larger is reduced while decoding, by a
    whole factor (averaging blocks), until it is at most that (None: full size). Transparent pixels
    are shown on white paper. Raises: InputError naming the source.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(source, (bytes, bytearray)):
        return read_bytes(bytes(source), name or "<bytes>", mode, batch_shape, max_side)
    path = pathlib.Path(source)
    name = name or str(path)
    check_image_file(path, name)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except PermissionError:
        raise errors.InputError(f"{name}: permission denied") from None
    except OSError as error:
        raise errors.InputError(f"{name}: cannot read: {error.strerror or error}") from None
    if magic.startswith(NPY_MAGIC):
        return read_npy(path, name, mode, max_side, batch_shape)
    if magic[:2] in PNM_MAGICS:
        return read_pnm(path, name, mode, max_side)
    return read_with_pillow(path, name, mode, max_side)


def read_image(path, name=None, mode="L", max_side=WORKING_SIDE):
    """`read_picture` for a file: the picture, or (N, 28, 28) for a .npy batch of MNIST-size images."""
    picture = read_picture(path, name, mode, (IMAGE_HEIGHT, IMAGE_WIDTH, 1), max_side)
    return picture[..., 0] if picture.ndim == 4 else picture


def check_image_file(path, name):
    """Refuse, in one line, a path that is not a readable, non-empty regular file."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise errors.InputError(f"{name}: no such file") from None
    except PermissionError:
        raise errors.InputError(f"{name}: permission denied") from None
    except OSError as error:  # a symbolic link loop, a name too long ...
        raise errors.InputError(f"{name}: cannot read: {error.strerror or error}") from None
    if stat.S_ISDIR(status.st_mode):
        raise errors.InputError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise errors.InputError(f"{name}: not a regular file (a device, FIFO or socket), not an image")
    if status.st_size == 0:
        raise errors.InputError(f"{name}: empty file, not an image")


def read_bytes(data, name, mode, batch_shape, max_side):
    """`read_picture` for bytes: they go through a private temporary file, removed on every path,
    so that large pictures are decoded a strip at a time as files are."""
    import tempfile

    if not data:
        raise errors.InputError(f"{name}: no data (empty input), not an image")
    handle = tempfile.NamedTemporaryFile(prefix="mnist-edge-picture-", delete=False)
    try:
        with handle:
            handle.write(data)
        return read_picture(handle.name, name, mode, batch_shape, max_side)
    finally:
        os.unlink(handle.name)


def check_size(name, height, width):
    if height < 1 or width < 1:
        raise errors.InputError(f"{name}: image has no pixels ({width}×{height})")
    if height * width > MAX_PIXELS:
        raise errors.InputError(
            f"{name}: image is {width}×{height} = {height * width / 1e6:.0f} megapixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f} megapixels allowed; scale it down first"
        )


def reduction_factor(height, width, max_side):
    """The whole factor that brings the longer side to at most `max_side` (1 when it already is)."""
    if not max_side:
        return 1
    return max(1, math.ceil(max(height, width) / max_side))


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


def to_mode(pixels, mode):
    """(H, W, C) with C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA), floats → (H, W) grayscale or (H, W, 3) RGB,
    transparent pixels shown on white paper."""
    channels = pixels.shape[2]
    colour, alpha = (pixels[..., :-1], pixels[..., -1:]) if channels in (2, 4) else (pixels, None)
    if alpha is not None:
        colour = colour * alpha + (1.0 - alpha)
    if mode == "L":
        return colour[..., 0] if colour.shape[2] == 1 else colour @ LUMA
    return np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour


def read_with_pillow(path, name, mode="L", max_side=WORKING_SIDE):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise errors.InputError(
            f"{name}: decoding this image format needs Pillow: pip install 'mnist-edge[edge]' "
            "(PGM and .npy files need nothing extra)"
        ) from None
    try:
        with warnings.catch_warnings():
            # Pillow warns from its own, larger, limit; ours (MAX_PIXELS) is checked right after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
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
        factor = reduction_factor(height, width, max_side)
        try:
            if image.format == "PNG":
                pixels = read_png_in_strips(path, factor, mode)
                if pixels is not None:
                    return pixels
            orientation = image.getexif().get(0x0112) if image.format != "PNG" else None
            if image.format == "JPEG" and factor > 1:
                # DCT scaling: decode at 1/2, 1/4 or 1/8 of the size, never below the size wanted.
                image.draft(mode, (-(-width // factor), -(-height // factor)))
                factor = reduction_factor(image.size[1], image.size[0], max_side)
            image = plain_mode(image)
            if factor > 1:
                image = image.reduce(factor)  # Pillow averages blocks in its own (uint8) pixels
            pixels = to_mode(pillow_pixels(image), mode)
            return np.ascontiguousarray(upright(pixels, orientation))
        except (OSError, ValueError, SyntaxError) as error:
            raise errors.InputError(f"{name}: corrupt or truncated image data ({error})") from None


def plain_mode(image):
    """The image in a mode Pillow can reduce and numpy can read: L, LA, RGB, RGBA or I (32-bit)."""
    if image.mode in ("L", "LA", "RGB", "RGBA", "I"):
        return image
    if image.mode.startswith("I;16"):
        return image.convert("I")
    if image.mode in ("PA",) or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    return image.convert("L" if image.mode in ("1", "F") else "RGB")


def pillow_pixels(image):
    """A plain_mode Pillow image as float32 (H, W, C) in [0, 1], C as in to_mode (1, 2, 3 or 4)."""
    if image.mode == "I":  # 16-bit grey
        pixels = np.asarray(image, dtype=np.float32)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        return np.clip(pixels / top, 0.0, 1.0)[..., None]
    pixels = np.asarray(image, dtype=np.float32)  # a new array: scaled in place, no second copy
    pixels /= np.float32(255.0)
    return pixels[..., None] if pixels.ndim == 2 else pixels


# EXIF orientation → the numpy operations that show the picture upright (as ImageOps.exif_transpose).
ORIENTATIONS = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1],
}


def upright(pixels, orientation):
    """Apply an EXIF orientation tag (1-8; None or 1: as stored) to an (H, W[, C]) array."""
    return ORIENTATIONS.get(orientation, lambda array: array)(pixels)


def read_png_in_strips(path, factor, mode):
    """A PNG decoded and reduced a strip at a time (see png_strips); None for the kinds it leaves to Pillow."""
    from PIL import Image

    from edge_runtime import png_strips

    with open(path, "rb") as handle:
        strips = png_strips.strips(handle, rows_per_strip_multiple=factor)
        try:
            header, first = next(strips)
        except png_strips.Unsupported:
            return None
        reduced = [block_mean(to_mode(first, mode), factor)]
        reduced.extend(block_mean(to_mode(strip, mode), factor) for _, strip in strips)
    orientation = None
    if header.exif:
        exif = Image.Exif()
        exif.load(header.exif)
        orientation = exif.get(0x0112)
    whole = reduced[0] if len(reduced) == 1 else np.concatenate(reduced, axis=0)
    return np.ascontiguousarray(upright(whole, orientation))


def read_pnm(path, name, mode="L", max_side=WORKING_SIDE):
    """Netpbm gray (P2 ASCII, P5 binary) and colour (P3, P6) maps, 8 or 16 bits, with numpy only, a strip
    of rows at a time."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
        magic = head[:2]
        if magic not in (b"P2", b"P3", b"P5", b"P6"):
            raise errors.InputError(f"{name}: not a PGM/PPM image (magic {magic!r}; P2, P3, P5 or P6 expected)")
        fields, position = parse_pnm_header(head, name)
        width, height, maxval = fields
        check_size(name, height, width)
        if not 1 <= maxval <= 65535:
            raise errors.InputError(f"{name}: PGM/PPM maximum value {maxval} is outside 1..65535")
        channels = 3 if magic in (b"P3", b"P6") else 1
        factor = reduction_factor(height, width, max_side)
        rows_per_strip = max(factor, STRIP_PIXELS // width // factor * factor)
        if magic in (b"P5", b"P6"):
            dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
            handle.seek(position + 1)  # exactly one whitespace byte separates the header from the pixels
            expected = width * height * channels * dtype.itemsize
            available = path.stat().st_size - position - 1
            if available < expected:
                raise errors.InputError(
                    f"{name}: truncated pixel data, {available} bytes for {width}×{height} needing {expected}")
            values = (np.fromfile(handle, dtype=dtype, count=min(rows_per_strip, height - start) * width * channels)
                      for start in range(0, height, rows_per_strip))
        else:
            handle.seek(position)
            values = ascii_values(handle, name, rows_per_strip * width * channels, width * height * channels)
        strips = []
        for strip in values:
            if strip.max(initial=0) > maxval:
                raise errors.InputError(f"{name}: pixel value {strip.max()} above the declared maximum {maxval}")
            pixels = strip.astype(np.float32).reshape(-1, width, channels) / np.float32(maxval)
            strips.append(block_mean(to_mode(pixels, mode), factor))
    return np.concatenate(strips, axis=0)


def parse_pnm_header(data, name):
    """The three numbers (width, height, maxval) after the magic, skipping comments; and where they end."""
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
    return fields, position


def ascii_values(handle, name, per_strip, total):
    """Yield the numbers of a plain (ASCII) PGM/PPM body, `per_strip` at a time, `total` in all."""
    pending, carry, produced = np.zeros(0, dtype=np.int64), b"", 0
    while produced < total:
        chunk = handle.read(1 << 20)
        text = carry + chunk
        if chunk:
            cut = max(text.rfind(b" "), text.rfind(b"\n"), text.rfind(b"\t"), text.rfind(b"\r"))
            text, carry = (text[: cut + 1], text[cut + 1 :]) if cut >= 0 else (b"", text)
        else:
            carry = b""
        try:
            numbers = np.array(text.split(), dtype=np.int64) if text.strip() else np.zeros(0, dtype=np.int64)
        except ValueError:
            raise errors.InputError(f"{name}: non-numeric pixel value in ASCII PGM/PPM") from None
        pending = np.concatenate([pending, numbers])
        while len(pending) >= min(per_strip, total - produced) > 0:
            count = min(per_strip, total - produced)
            yield pending[:count]
            pending, produced = pending[count:], produced + count
        if not chunk and produced < total:
            raise errors.InputError(f"{name}: truncated pixel data, {produced + len(pending)} values for {total}")


def read_npy(path, name, mode="L", max_side=WORKING_SIDE, batch_shape=None):
    """A numpy array file: (H, W), (H, W, 1|3|4), or a batch (N, H, W[, C]) shaped like `batch_shape`
    (H, W, C), returned as (N, H, W, C); uint8 or [0, 1] floats; never a pickle."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            offset = handle.tell()
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
    if batch or fortran_order:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise errors.InputError(f"{name}: cannot read .npy data ({error})") from None
        array = to_unit_float(array, name)
        if batch:
            return array.reshape(shape[0], *batch_shape)
        strips = [array]
        factor = reduction_factor(shape[0], shape[1], max_side)
    else:
        strips, factor = npy_strips(path, name, shape, dtype, offset, max_side)
    colour_channels = slice(0, 3)  # .npy colour images are taken as they are, alpha ignored
    reduced = [block_mean(to_mode(strip.reshape(strip.shape[0], shape[1], -1)[..., colour_channels], mode), factor)
               for strip in strips]
    return np.concatenate(reduced, axis=0)


def npy_strips(path, name, shape, dtype, offset, max_side):
    """Read a C-ordered (H, W[, C]) .npy image a strip of rows at a time; return (strips, reduction factor)."""
    height, width = shape[0], shape[1]
    per_row = width * (shape[2] if len(shape) == 3 else 1)
    factor = reduction_factor(height, width, max_side)
    rows_per_strip = max(factor, STRIP_PIXELS // width // factor * factor)
    if path.stat().st_size - offset < height * per_row * dtype.itemsize:
        raise errors.InputError(f"{name}: cannot read .npy data (file is shorter than its {shape} {dtype} array)")

    def strips():
        with open(path, "rb") as handle:
            handle.seek(offset)
            for start in range(0, height, rows_per_strip):
                rows = min(rows_per_strip, height - start)
                strip = np.fromfile(handle, dtype=dtype, count=rows * per_row).reshape(rows, per_row)
                yield to_unit_float(strip, name)

    return strips(), factor


# ---------------------------------------------------------------------------------------- the digit


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
    if image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and paper <= 0.5:
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
