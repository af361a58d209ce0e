"""Image files to MNIST digits: real PNG/JPEG/PGM/.npy files written here, read back, and every bad file
refused in one line by `predict`."""

import json
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from edge_runtime import errors
from edge_runtime.pictures import decoding, preparation, resampling
from edge_runtime.pictures import digit as digit_preparation
from tests.conftest import run_cli
from tests.digit_photos import photo_of, write_photos


def centre_of_mass(image):
    rows, columns = np.indices(image.shape)
    return (rows * image).sum() / image.sum(), (columns * image).sum() / image.sum()


def test_a_28x28_mnist_style_png_passes_through_unchanged(digits, tmp_path):
    digit = digits.x_test[0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    batch, names = preparation.load_digits([tmp_path / "digit.png"])
    assert names == [str(tmp_path / "digit.png")]
    np.testing.assert_array_equal(batch[0], digit.astype(np.float32) / 255)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_photo_of_a_digit_becomes_that_digit_mnist_style(digits, tmp_path, suffix):
    """Dark ink on light paper, 8× larger, off-centre, noisy, (lossy) compressed: back to ≈ the original."""
    originals = digits.x_test[:20]
    paths = write_photos(originals, digits.y_test[:20], tmp_path, suffix=suffix)
    batch, _ = preparation.load_digits(paths)
    assert batch.shape == (20, 28, 28) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() == 1.0
    for prepared, original in zip(batch, originals.astype(np.float32) / 255):
        rows, columns = np.nonzero(prepared.any(axis=1))[0], np.nonzero(prepared.any(axis=0))[0]
        assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 <= 21  # fits the 20×20 box (+1 for blur)
        assert np.allclose(centre_of_mass(prepared), (14, 14), atol=0.75)
        # MNIST rounded its centring too: allow the two to sit one pixel apart.
        correlation = max(np.corrcoef(np.roll(prepared, (down, right), axis=(0, 1)).ravel(), original.ravel())[0, 1]
                          for down in (-1, 0, 1) for right in (-1, 0, 1))
        assert correlation > 0.9, correlation


def test_aspect_ratio_is_kept_when_fitting_the_20x20_box():
    picture = np.ones((300, 300), dtype=np.float32)
    picture[50:250, 130:170] = 0.0  # a dark bar 200 tall, 40 wide, on white
    digit = digit_preparation.to_mnist(picture)
    rows, columns = np.nonzero(digit.any(axis=1))[0], np.nonzero(digit.any(axis=0))[0]
    assert rows[-1] - rows[0] + 1 == 20
    assert columns[-1] - columns[0] + 1 == 4
    assert np.allclose(centre_of_mass(digit), (14, 14), atol=0.5)


def test_pgm_binary_ascii_and_16_bit_read_like_the_png(digits, tmp_path):
    picture = photo_of(digits.x_test[1], np.random.default_rng(1))
    Image.fromarray(picture).save(tmp_path / "digit.png")
    height, width = picture.shape
    (tmp_path / "p5.pgm").write_bytes(b"P5\n# a comment\n%d %d\n255\n" % (width, height) + picture.tobytes())
    ascii_pixels = "\n".join(" ".join(str(value) for value in row) for row in picture)
    (tmp_path / "p2.pgm").write_text(f"P2\n{width} {height}\n255\n{ascii_pixels}\n")
    wide = (picture.astype(">u2") * 257).tobytes()
    (tmp_path / "p5-16bit.pgm").write_bytes(b"P5 %d %d 65535\n" % (width, height) + wide)
    batch, _ = preparation.load_digits([tmp_path / name for name in ("digit.png", "p5.pgm", "p2.pgm", "p5-16bit.pgm")])
    for other in batch[1:]:
        np.testing.assert_allclose(other, batch[0], atol=1e-6)


def test_npy_files_single_colour_and_batches(digits, tmp_path):
    np.save(tmp_path / "batch.npy", digits.x_test[:3])
    np.save(tmp_path / "floats.npy", digits.x_test[3].astype(np.float32) / 255)
    rgb = np.repeat(photo_of(digits.x_test[4], np.random.default_rng(2))[..., None], 3, axis=2)
    np.save(tmp_path / "rgb.npy", rgb)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    batch, names = preparation.load_digits([tmp_path / "batch.npy", tmp_path / "floats.npy", tmp_path / "rgb.npy",
                                       tmp_path / "rgb.png"])
    assert names[:3] == [f"{tmp_path / 'batch.npy'}[{index}]" for index in range(3)]
    np.testing.assert_array_equal(batch[:4], digits.x_test[:4].astype(np.float32) / 255)
    np.testing.assert_allclose(batch[4], batch[5], atol=0.02)


def test_a_drawing_on_a_transparent_background_reads_as_ink_on_paper(digits, tmp_path):
    digit = np.asarray(Image.fromarray(digits.x_test[5]).resize((112, 112)))
    drawing = np.zeros((112, 112, 4), dtype=np.uint8)  # black ink, alpha = ink strength, else transparent
    drawing[..., 3] = digit
    Image.fromarray(drawing, "RGBA").save(tmp_path / "drawing.png")
    Image.fromarray(255 - digit).save(tmp_path / "paper.png")
    batch, _ = preparation.load_digits([tmp_path / "drawing.png", tmp_path / "paper.png"])
    np.testing.assert_allclose(batch[0], batch[1], atol=0.02)


def test_a_blank_picture_has_no_digit():
    with pytest.raises(errors.InputError, match="photo: no digit found"):
        digit_preparation.to_mnist(np.full((50, 40), 0.9, dtype=np.float32), name="photo")


def test_png_and_jpeg_need_pillow_but_pgm_and_npy_do_not(digits, tmp_path):
    Image.fromarray(digits.x_test[0]).save(tmp_path / "digit.png")
    (tmp_path / "digit.pgm").write_bytes(b"P5 28 28 255\n" + digits.x_test[0].tobytes())
    np.save(tmp_path / "digit.npy", digits.x_test[0])
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from edge_runtime import errors\n"
        "from edge_runtime.pictures import preparation\n"
        f"batch, _ = preparation.load_digits([{str(tmp_path / 'digit.pgm')!r}, {str(tmp_path / 'digit.npy')!r}])\n"
        "assert batch.shape == (2, 28, 28)\n"
        "try:\n"
        f"    preparation.load_digits([{str(tmp_path / 'digit.png')!r}])\n"
        "except errors.InputError as error:\n"
        "    print(error)\n"
    )
    result = run_cli("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{tmp_path / 'digit.png'}: decoding this image format needs Pillow: "
                                     "pip install 'mnist-edge[edge]' (PGM and .npy files need nothing extra)")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming_size(width, height):
    """A PNG whose header says width×height (a few bytes of data): refused before decoding."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def grey_png(damage=None):
    """A 40×40 grey PNG with a dark square; `damage` "cut" ends it inside its pixel data, "crc" breaks a checksum."""
    rows = b"".join(b"\0" + bytes([40 if 10 <= row < 30 and 10 <= column < 30 else 220 for column in range(40)])
                    for row in range(40))
    idat = png_chunk(b"IDAT", zlib.compress(rows))
    if damage == "crc":
        idat = idat[:-1] + bytes([idat[-1] ^ 0xFF])
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 40, 8, 0, 0, 0, 0)) + idat
    return data[: len(data) - len(idat) // 2] if damage == "cut" else data + png_chunk(b"IEND", b"")


def write_bad_file(directory, name, content):
    path = directory / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    elif content is not None:
        path.write_bytes(content)
    return path


def truncated_jpeg(digits):
    import io

    buffer = io.BytesIO()
    Image.fromarray(photo_of(digits.x_test[0], np.random.default_rng(0))).save(buffer, format="JPEG")
    return buffer.getvalue()[:600]


BAD_FILES = [
    ("missing.png", None, "no such file"),
    ("empty.png", b"", "empty file, not an image"),
    ("notes.png", b"these are my notes, not a picture\n", "not an image"),
    ("huge.png", png_claiming_size(20000, 20000), "megapixels allowed"),
    ("cut.png", grey_png("cut"), "corrupt or truncated image data (truncated IDAT chunk)"),
    ("crc.png", grey_png("crc"), "corrupt or truncated image data (broken CRC in the IDAT chunk)"),
    ("large.png", png_claiming_size(9000, 9000), "image is 9000×9000 = 81 megapixels"),
    ("huge.pgm", b"P5 20000 20000 255\n", "image is 20000×20000 = 400 megapixels"),
    ("short.pgm", b"P5 28 28 255\n" + bytes(100), "truncated pixel data"),
    ("blank.pgm", b"P5 28 28 255\n" + bytes([255]) * 784, "no digit found"),
    ("nan.npy", np.full((28, 28), np.nan, dtype=np.float32), "contains NaN or infinite values"),
    ("shape.npy", np.zeros((5, 5, 5, 5), dtype=np.uint8), "expected an image (H, W)"),
    ("dtype.npy", np.zeros((28, 28), dtype=np.complex64), "expected uint8 or float pixels"),
    ("objects.npy", np.array([{"a": 1}], dtype=object), "expected uint8 or float pixels"),
    ("range.npy", np.full((28, 28), 255.0, dtype=np.float32), "float pixels must be in [0, 1]"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_predict_refuses_a_bad_image_in_one_line_naming_it(fixture_bundle, tmp_path, name, content, message):
    path = write_bad_file(tmp_path, name, content)
    result = run_cli("-m", "edge_runtime", "predict", str(fixture_bundle / "model_int8.tflite"), str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: ") and message in lines[-1], lines[-1]


def test_a_truncated_jpeg_is_refused(fixture_bundle, digits, tmp_path):
    path = write_bad_file(tmp_path, "cut.jpg", truncated_jpeg(digits))
    result = run_cli("-m", "edge_runtime", "predict", str(fixture_bundle / "model_int8.tflite"), str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: corrupt or truncated image data")


def test_predict_reads_files_directories_and_stdin_and_speaks_json(fixture_bundle, digits, tmp_path):
    paths = write_photos(digits.x_test[:3], digits.y_test[:3], tmp_path / "photos", suffix=".png")
    model = str(fixture_bundle / "model_int8.tflite")
    result = run_cli("-m", "edge_runtime", "predict", model, str(tmp_path / "photos"), "-", "--json", "--top-k", "2",
                     stdin_bytes=paths[0].read_bytes())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [entry["name"] for entry in report["predictions"]] == [*map(str, paths), "<stdin>"]
    assert report["predictions"][0] == {**report["predictions"][3], "name": str(paths[0])}
    for entry in report["predictions"]:
        assert len(entry["top_k"]) == 2 and entry["top_k"][0]["label"] == entry["label"]
        assert entry["top_k"][0]["probability"] >= entry["top_k"][1]["probability"]


def test_empty_stdin_is_refused(fixture_bundle):
    result = run_cli("-m", "edge_runtime", "predict", str(fixture_bundle / "model_int8.tflite"), "-", stdin_bytes=b"")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: <stdin>: no data (empty input), not an image"


def test_a_picture_reads_the_same_from_a_file_and_from_its_bytes_whatever_its_name(digits, tmp_path):

    paths = write_photos(digits.x_test[:2], digits.y_test[:2], tmp_path, suffix=".png")
    misnamed = tmp_path / "actually-a-png.jpg"
    misnamed.write_bytes(paths[0].read_bytes())
    digit = preparation.Preparation("digit", "light-on-dark", (28, 28, 1))
    from_files, _ = preparation.prepare_files(paths, digit)
    from_bytes, names = preparation.prepare_files([path.read_bytes() for path in paths], digit, names=["a", "b"])
    from_misnamed, _ = preparation.prepare_files([misnamed], digit)
    np.testing.assert_array_equal(from_files, from_bytes)
    np.testing.assert_array_equal(from_misnamed[0], from_files[0])
    assert names == ["a", "b"] and from_files.shape == (2, 28, 28, 1)


# ------------------------------------------------------------------ big pictures, any format, bounded memory

MEMORY_LIMIT_MIB = 80  # any picture the 50-megapixel cap admits: a Pi Zero has 512 MB, and uploads come several at once


@pytest.fixture(scope="module")
def big_photos(digits, tmp_path_factory):
    """One 12-megapixel picture of a "7" on noisy paper (a phone photo's size), saved as a colour PNG, a
    JPEG and a PGM at 4000×3000 and smaller; and a 49-megapixel 1-bit PNG of a "7" (a few KB)."""
    from PIL import ImageDraw

    directory = tmp_path_factory.mktemp("big")
    assert digits.y_test[0] == 7
    gray = photo_of(digits.x_test[0], np.random.default_rng(7), scale=60, canvas=(3000, 4000), noise=0.06)
    tint = np.array([1.0, 0.97, 0.9])  # warm light: the colour channels differ
    photo = Image.fromarray((gray[..., None] * tint).astype(np.uint8))
    paths = {}
    for width in (4000, 2000, 1000, 640):
        picture = photo if width == 4000 else photo.resize((width, width * 3 // 4), Image.LANCZOS)
        for suffix in (".png", ".jpg", ".pgm"):
            path = directory / f"seven-{width}{suffix}"
            (picture.convert("L") if suffix == ".pgm" else picture).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
            paths[width, suffix] = path
    bilevel = Image.new("1", (7000, 7000), 1)
    ImageDraw.Draw(bilevel).line([(2000, 1500), (5000, 1500), (3000, 5500)], fill=0, width=300)
    bilevel.save(directory / "seven-49mp.png")
    paths["49mp"] = directory / "seven-49mp.png"
    return paths


def best_shifted_correlation(image, other):
    """Correlation of two 28×28 digits, allowing one pixel of shift: centring by mass rounds to whole pixels."""
    return max(np.corrcoef(np.roll(image, (down, right), axis=(0, 1)).ravel(), other.ravel())[0, 1]
               for down in (-1, 0, 1) for right in (-1, 0, 1))


@pytest.mark.slow  # writes 12-megapixel photos first: about 15 s
def test_one_picture_gives_one_digit_whatever_its_format_and_size(big_photos, digits):
    """The same photo as PNG, JPEG and PGM at 12, 3, 0.75 and 0.3 megapixels: the same MNIST digit.
    (A full-size PNG used to let the paper's noise through the ink threshold and crop the whole page.)"""
    paths = [path for key, path in big_photos.items() if key != "49mp"]
    batch, _ = preparation.load_digits(paths)
    original = digits.x_test[0].astype(np.float32) / 255
    for prepared, path in zip(batch, paths):
        assert np.allclose(centre_of_mass(prepared), (14, 14), atol=0.75), path
        assert best_shifted_correlation(prepared, batch[0]) > 0.95, path
        assert best_shifted_correlation(prepared, original) > 0.85, path


@pytest.mark.slow  # writes 12-megapixel photos first: about 15 s
def test_one_picture_gives_one_label_whatever_its_format_and_size(big_photos, fixture_bundle):
    from edge_runtime import Classifier

    paths = [path for key, path in big_photos.items() if key != "49mp"]
    model = Classifier.load(fixture_bundle / "model_int8.tflite")
    labels = model.predict(preparation.prepare_files(paths, preparation.for_classifier(model))[0]).labels
    assert labels.tolist() == [7] * len(paths), dict(zip([path.name for path in paths], labels.tolist()))


@pytest.mark.slow  # writes 12- and 49-megapixel pictures first: about 20 s
@pytest.mark.parametrize("key", [(4000, ".png"), (4000, ".jpg"), (4000, ".pgm"), "49mp"], ids=str)
def test_predict_on_a_big_picture_peaks_below_the_memory_limit(fixture_bundle, big_photos, key, monkeypatch):
    """`python -m edge_runtime predict` in a child process; its peak RSS (VmHWM) read at exit."""
    from edge_runtime.cli import benchmarking
    from tests.conftest import REPO_ROOT

    monkeypatch.setenv("PYTHONPATH", f"{REPO_ROOT / 'tests' / 'peak_rss'}:{REPO_ROOT}")
    command = [sys.executable, "-m", "edge_runtime", "predict", str(fixture_bundle / "model_int8.tflite"),
               str(big_photos[key])]
    _, peak_mib = benchmarking.child_peak_rss(command, what=big_photos[key])
    assert peak_mib <= MEMORY_LIMIT_MIB, f"{big_photos[key].name}: {peak_mib:.0f} MiB"


# ------------------------------------------------------------------ decoding

def png_variants():
    """Small PNGs of every colour type and bit depth Pillow writes, with what Pillow itself decodes them to."""
    rng = np.random.default_rng(3)
    pixels = np.cumsum(rng.integers(0, 9, (45, 67, 4)), axis=1).astype(np.uint8)  # varied rows: every filter type
    rgb = Image.fromarray(pixels[..., :3])
    return {
        "grey": (Image.fromarray(pixels[..., 0]), {}),
        "grey16": (Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), {}),
        "grey-alpha": (Image.fromarray(pixels[..., 0]).convert("LA"), {}),
        "rgb": (rgb, {}),
        "rgba": (Image.fromarray(pixels), {}),
        "1-bit": (Image.fromarray(pixels[..., 0] > 100), {}),
        "palette-4-bit": (rgb.quantize(16), {}),
        "palette-2-bit": (rgb.quantize(4), {"bits": 2}),
        "palette-transparent": (rgb.quantize(16), {"transparency": 3}),
        "grey-colour-key": (Image.fromarray(pixels[..., 0]), {"transparency": int(pixels[0, 0, 0])}),
        "interlaced-fallback": (rgb, {"interlace": 1}),
    }


@pytest.mark.parametrize("kind", list(png_variants()))
def test_png_decoded_in_strips_matches_pillow(tmp_path, monkeypatch, kind):
    from edge_runtime.pictures import png_strips

    monkeypatch.setattr(png_strips, "STRIP_PIXELS", 300)  # many strips, with rows joined across them
    image, options = png_variants()[kind]
    path = tmp_path / f"{kind}.png"
    image.save(path, **options)
    with Image.open(path) as decoded:
        if decoded.mode.startswith("I"):
            expected = np.asarray(decoded, dtype=np.float32) / 65535
        else:
            paper = Image.new("RGBA", decoded.size, "white")
            expected = np.asarray(Image.alpha_composite(paper, decoded.convert("RGBA")).convert("RGB"), np.float32) / 255
            expected = expected @ decoding.LUMA
    # Pillow rounds its compositing and grey conversion to whole uint8 steps; we do not.
    np.testing.assert_allclose(decoding.read_picture(path, max_side=None), expected, atol=1.5 / 255)


def test_read_image_gives_rgb_on_request_and_reduces_by_whole_blocks(tmp_path):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    for suffix in (".png", ".ppm", ".bmp"):
        Image.fromarray(pixels).save(tmp_path / f"colour{suffix}")
        full = decoding.read_picture(tmp_path / f"colour{suffix}", mode="RGB", max_side=None)
        np.testing.assert_allclose(full, pixels / 255, atol=1e-6)
        reduced = decoding.read_picture(tmp_path / f"colour{suffix}", mode="RGB", max_side=100)
        assert reduced.shape == (60, 82, 3)  # 410 / 5 = 82: the smallest whole factor that fits
        np.testing.assert_allclose(reduced, pixels[:300, :410].reshape(60, 5, 82, 5, 3).mean(axis=(1, 3)) / 255,
                                   atol=1 / 255 if suffix == ".bmp" else 1e-5)  # Pillow's reduce rounds to uint8


def test_ascii_pgm_read_a_strip_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "STRIP_PIXELS", 64)
    picture = np.random.default_rng(5).integers(0, 256, (37, 23), dtype=np.uint8)
    lines = "\n".join(" ".join(str(value) for value in row) for row in picture)
    (tmp_path / "plain.pgm").write_text(f"P2\n# comment\n23 37\n255\n{lines}\n")
    (tmp_path / "raw.pgm").write_bytes(b"P5 23 37 255\n" + picture.tobytes())
    for name in ("plain.pgm", "raw.pgm"):
        np.testing.assert_allclose(decoding.read_picture(tmp_path / name, max_side=None), picture / 255, atol=1e-6)
        np.testing.assert_allclose(decoding.read_picture(tmp_path / name, max_side=10),
                                   resampling.block_mean(picture / 255, 4), atol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_the_exif_orientation_of_a_phone_photo_is_applied(tmp_path, suffix):
    picture = np.full((60, 90), 230, dtype=np.uint8)
    picture[5:15, 5:40] = 20  # a dark mark at the top left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to show"
    Image.fromarray(picture).save(tmp_path / f"turned{suffix}", exif=exif.tobytes())
    upright = decoding.read_picture(tmp_path / f"turned{suffix}", max_side=None)
    assert upright.shape == (90, 60)
    assert upright[5:40, 45:55].mean() < 0.3 and upright[50:, :30].mean() > 0.8  # now at the top right


# ------------------------------------------------------------------ the digit

def stroke_widths(digit):
    """Mean stroke width of a 28×28 digit in pixels: 2 × area / perimeter of its ink above half strength,
    drawn 4× larger (a long stroke's perimeter is twice its length)."""
    large = np.asarray(Image.fromarray(digit.astype(np.float32)).resize((112, 112), Image.BILINEAR)) > 0.5
    padded = np.pad(large, 1)
    perimeter = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    return 2.0 * np.count_nonzero(large) / perimeter / 4


def test_thick_blurred_strokes_come_out_as_thin_as_mnist_without_a_grey_halo(digits):
    """The failure behind issue 10: a low-resolution scan of a thick, blurred digit became a bold digit
    with a grey halo, which MNIST's digits lack (2→1, 4→6)."""
    from PIL import ImageFilter

    ring = Image.new("L", (200, 200), 235)
    from PIL import ImageDraw

    ImageDraw.Draw(ring).ellipse((40, 20, 160, 180), outline=30, width=34)  # a bold "0"
    scan = ring.filter(ImageFilter.GaussianBlur(9)).resize((30, 30), Image.BILINEAR)
    digit = digit_preparation.to_mnist(np.asarray(scan))
    mnist_widths = [stroke_widths(image.astype(np.float32) / 255) for image in digits.x_test[:200]]
    low, high = np.percentile(mnist_widths, [10, 90])
    assert low <= stroke_widths(digit) <= high, (stroke_widths(digit), low, high)
    grey = np.count_nonzero((digit > 0.05) & (digit < 0.5)) / np.count_nonzero(digit > 0.05)
    mnist_grey = np.mean([np.count_nonzero((image > 12) & (image < 128)) / np.count_nonzero(image > 12)
                          for image in digits.x_test[:200]])
    assert grey <= mnist_grey + 0.05, (grey, mnist_grey)


def test_shadow_and_specks_do_not_move_the_digit(digits):
    """Uneven light (a shadow over half the page) and dirt far from the digit: the same digit as on clean paper."""
    rng = np.random.default_rng(6)
    clean = photo_of(digits.x_test[2], rng, noise=0.01).astype(np.float32) / 255
    shaded = clean * np.where(np.arange(clean.shape[1]) < 200, 1.0, 0.55)[None, :]
    shaded[10:14, 10:14] = 0.1  # a speck
    shaded[380:384, 330:335] = 0.1
    reference, both = digit_preparation.to_mnist(clean), digit_preparation.to_mnist(shaded.astype(np.float32))
    assert np.corrcoef(reference.ravel(), both.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("shape", [(7,), (1000,), (3, 4, 50), (25, 6, 7)])
def test_the_percentiles_are_numpys_without_importing_numpy_ma(shape):
    values = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    axis = None if len(shape) == 1 else -1
    for percents in (50, [0.1, 10, 90, 99.9]):
        np.testing.assert_allclose(digit_preparation.percentile(values, percents, axis=axis),
                                   np.percentile(values, percents, axis=axis), atol=1e-6)
    np.testing.assert_allclose(digit_preparation.median(values, axis=0), np.median(values, axis=0), atol=1e-6)
