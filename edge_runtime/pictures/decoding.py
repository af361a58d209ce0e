"""Picture files and bytes decoded to float pixels in [0, 1], with bounded memory.

`read_picture` decodes a file or bytes to grayscale (H, W) or RGB (H, W, 3) floats. A large picture
is reduced *while it is decoded* (JPEG's DCT scaling, PNG and PGM a strip of rows at a time,
averaged in whole blocks) until its longer side is at most WORKING_SIDE pixels, so memory stays
bounded and a 12-megapixel photo looks the same to what follows as the same photo at 3 or 1
megapixels.

Which decoder reads a file is told by its content, once, not by its name. PNG, JPEG and the other
formats Pillow knows need Pillow, imported only when such a file is read; PGM/PPM (P2, P3, P5, P6)
and `.npy` need numpy alone. Bytes (stdin, an upload) are read the same way. Every problem is an
InputError naming the file: missing, unreadable, empty, not an image, truncated, too large to
decode, blank.
"""

import math
import os
import stat
import warnings

import numpy as np

from edge_runtime import errors
from edge_runtime.pictures.resampling import block_mean
from edge_runtime.preprocessing import to_unit_float

# Refused before any pixel is decoded: a 48-megapixel phone photo passes, a 20000×20000 image does not.
MAX_PIXELS = 50_000_000
# Pictures are decoded at most this large (longer side); a digit needs far fewer pixels than a photo has.
WORKING_SIDE = 1024
# What `predict DIRECTORY` picks up (the decoder is still chosen by the content).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".npy"}
PNM_MAGICS = (b"P2", b"P3", b"P5", b"P6")
NPY_MAGIC = b"\x93NUMPY"
STRIP_PIXELS = 1 << 17  # large pictures are decoded about this many pixels at a time
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L" conversion
MODES = ("L", "RGB")


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
    path = os.fspath(source)
    name = name or path
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


def check_image_file(path, name):
    """Refuse, in one line, a path that is not a readable, non-empty regular file."""
    try:
        status = os.stat(path)
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

    from edge_runtime.pictures import png_strips

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
            available = os.stat(path).st_size - position - 1
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
    if os.stat(path).st_size - offset < height * per_row * dtype.itemsize:
        raise errors.InputError(f"{name}: cannot read .npy data (file is shorter than its {shape} {dtype} array)")

    def strips():
        with open(path, "rb") as handle:
            handle.seek(offset)
            for start in range(0, height, rows_per_strip):
                rows = min(rows_per_strip, height - start)
                strip = np.fromfile(handle, dtype=dtype, count=rows * per_row).reshape(rows, per_row)
                yield to_unit_float(strip, name)

    return strips(), factor
