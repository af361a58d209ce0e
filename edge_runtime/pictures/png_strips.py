"""PNG pictures decoded a strip of rows at a time, so that a large one never sits in memory whole.

Pillow decodes a PNG into one full-size image (a 12-megapixel RGB photo is 48 MB there, a 49-megapixel
1-bit scan 49 MB). Here the compressed stream is inflated incrementally and every strip of filtered
rows is handed to Pillow as a small PNG of its own, preceded by the previous strip's last row stored
unfiltered, which is all that PNG's row filters refer back to. The small PNG declares a colour type
with the same bytes per pixel as the original (the filters work on bytes, at that distance), so
Pillow returns the original's raw bytes, which numpy then turns into pixels.
Format: https://www.w3.org/TR/png/ (chunks §5, filters §7.3 and §9).
"""

import io
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRIP_PIXELS = 1 << 17  # about 130,000 pixels per strip: about a megabyte whatever the picture's size
# Bytes per pixel → the 8-bit colour type with that many bytes per pixel (grey, grey+alpha, RGB, RGBA).
CONTAINER_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class Unsupported(Exception):
    """A valid PNG this reader leaves to Pillow (interlaced, or 16-bit colour)."""


class Header:
    """What the chunks before the pixels say: size, bit depth, colour type, palette, transparency, EXIF."""

    def __init__(self):
        self.width = self.height = self.bit_depth = self.colour_type = self.interlace = None
        self.palette = None  # (N, 3) uint8
        self.transparency = None  # bytes of the tRNS chunk
        self.exif = None


def chunks(handle):
    """Yield (type, data) for each chunk; raises ValueError for a truncated or corrupt file."""
    if handle.read(8) != SIGNATURE:
        raise ValueError("not a PNG file")
    while True:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError("file ends before the IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        data = handle.read(length)
        crc = handle.read(4)
        if len(data) < length or len(crc) < 4:
            raise ValueError(f"truncated {kind.decode('latin-1')} chunk")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
            raise ValueError(f"broken CRC in the {kind.decode('latin-1')} chunk")
        yield kind, data
        if kind == b"IEND":
            return


def read_header(handle):
    """Read chunks up to the first IDAT; return (Header, the rest of the chunk iterator, first IDAT data)."""
    header = Header()
    iterator = chunks(handle)
    for kind, data in iterator:
        if kind == b"IHDR":
            (header.width, header.height, header.bit_depth, header.colour_type, _, _,
             header.interlace) = struct.unpack(">IIBBBBB", data)
        elif kind == b"PLTE":
            header.palette = np.frombuffer(data, dtype=np.uint8)[: len(data) // 3 * 3].reshape(-1, 3)
        elif kind == b"tRNS":
            header.transparency = data
        elif kind == b"eXIf":
            header.exif = data
        elif kind == b"IDAT":
            return header, iterator, data
    raise ValueError("no image data (IDAT chunk)")


def strips(handle, rows_per_strip_multiple=1):
    """Yield (Header, strip) where each strip is float32 (rows, width, channels) in [0, 1] with the
    channels Pillow would give: L, LA, RGB or RGBA (palette and transparency key applied).

    Every strip but the last has a multiple of `rows_per_strip_multiple` rows.
    Raises: Unsupported; ValueError for a corrupt file.
    """
    header, iterator, first = read_header(handle)
    if header.interlace:
        raise Unsupported("interlaced PNG")
    channels = CHANNELS.get(header.colour_type)
    if channels is None or header.bit_depth not in (1, 2, 4, 8, 16):
        raise ValueError(f"colour type {header.colour_type} with bit depth {header.bit_depth} is not valid PNG")
    bits_per_pixel = channels * header.bit_depth
    pixel_bytes = max(1, bits_per_pixel // 8)
    if pixel_bytes not in CONTAINER_COLOUR_TYPE:
        raise Unsupported("16-bit colour PNG")
    row_bytes = (header.width * bits_per_pixel + 7) // 8
    step = rows_per_strip_multiple
    rows_per_strip = max(step, STRIP_PIXELS // max(1, header.width) // step * step)
    pending = bytearray()
    previous_row = bytes(row_bytes)  # above the first row, PNG's filters see zeros
    pieces = inflated(first, iterator, header)
    done = 0
    while done < header.height:
        rows = min(rows_per_strip, header.height - done)
        needed = rows * (row_bytes + 1)
        while len(pending) < needed:
            piece = next(pieces, None)
            if piece is None:
                raise ValueError(f"image data ends after {done + len(pending) // (row_bytes + 1)} of {header.height} rows")
            pending += piece
        raw = decode_filtered(previous_row, memoryview(pending)[:needed], rows, row_bytes, pixel_bytes)
        del pending[:needed]
        previous_row = raw[-1].tobytes()
        done += rows
        yield header, to_pixels(header, raw, rows, channels)


def inflated(first, iterator, header):
    """Yield the decompressed bytes of the IDAT chunks a piece (at most 256 KiB) at a time."""
    inflater = zlib.decompressobj()
    data = first
    while data is not None:
        while data:
            try:
                piece = inflater.decompress(data, 1 << 18)
            except zlib.error as error:
                raise ValueError(f"corrupt compressed data ({error})") from None
            data = inflater.unconsumed_tail
            yield piece
        data = None
        for kind, chunk_data in iterator:
            if kind == b"IDAT":
                data = chunk_data
                break
            if kind == b"eXIf":
                header.exif = chunk_data


def decode_filtered(previous_row, filtered, rows, row_bytes, pixel_bytes):
    """Undo PNG's row filters with Pillow: a small PNG of (the unfiltered row above) + these rows."""
    from PIL import PngImagePlugin

    width = row_bytes // pixel_bytes
    deflater = zlib.compressobj(0)  # stored, not compressed: Pillow only has to copy it
    body = deflater.compress(b"\x00" + previous_row) + deflater.compress(filtered) + deflater.flush()
    ihdr = struct.pack(">IIBBBBB", width, rows + 1, 8, CONTAINER_COLOUR_TYPE[pixel_bytes], 0, 0, 0)
    data = SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    # The PNG reader itself, not Image.open: opening nameless bytes would load every common plugin.
    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as strip:
        raw = np.asarray(strip)
    return raw.reshape(rows + 1, row_bytes)[1:]


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def to_pixels(header, raw, rows, channels):
    """Raw row bytes (rows, row_bytes) → float32 (rows, width, channels of L/LA/RGB/RGBA) in [0, 1]."""
    width, depth = header.width, header.bit_depth
    if depth < 8:
        shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
        values = ((raw[:, :, None] >> shifts) & ((1 << depth) - 1)).reshape(rows, -1)[:, :width]
    elif depth == 8:
        values = raw.reshape(rows, width, channels)
    else:
        values = raw.reshape(rows, width, channels, 2).astype(np.uint16)
        values = (values[..., 0] << 8) | values[..., 1]
    if header.colour_type == 3:  # palette: indices → RGB (+ alpha from tRNS)
        palette = header.palette
        if palette is None:
            raise ValueError("palette image without a PLTE chunk")
        indices = np.minimum(values.reshape(rows, width), len(palette) - 1)
        pixels = palette[indices].astype(np.float32) / 255
        if header.transparency:
            alpha = np.full(len(palette), 255, dtype=np.uint8)
            alpha[: len(header.transparency)] = np.frombuffer(header.transparency[: len(palette)], dtype=np.uint8)
            pixels = np.concatenate([pixels, (alpha[indices].astype(np.float32) / 255)[..., None]], axis=2)
        return pixels
    values = values.reshape(rows, width, channels)
    top = float((1 << depth) - 1)
    pixels = values.astype(np.float32)
    pixels /= np.float32(top)  # in place: no second full-size copy
    if header.transparency and header.colour_type in (0, 2):  # one colour is transparent
        key = np.frombuffer(header.transparency, dtype=">u2")[:channels]
        opaque = ~np.all(values == key, axis=2, keepdims=True)
        pixels = np.concatenate([pixels, opaque.astype(np.float32)], axis=2)
    return pixels
