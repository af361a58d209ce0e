"""Image files to MNIST digits: real PNG/JPEG/PGM/.npy files written here, read back, and every bad file
refused in one line by `predict`."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edge_runtime import errors, images
from tests.conftest import run_cli
from tests.digit_photos import photo_of, write_photos


def centre_of_mass(image):
    rows, columns = np.indices(image.shape)
    return (rows * image).sum() / image.sum(), (columns * image).sum() / image.sum()


def test_a_28x28_mnist_style_png_passes_through_unchanged(mnist, tmp_path):
    digit = mnist.x_test[0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    batch, names = images.load_images([tmp_path / "digit.png"])
    assert names == [str(tmp_path / "digit.png")]
    np.testing.assert_array_equal(batch[0], digit.astype(np.float32) / 255)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_photo_of_a_digit_becomes_that_digit_mnist_style(mnist, tmp_path, suffix):
    """Dark ink on light paper, 8× larger, off-centre, noisy, (lossy) compressed: back to ≈ the original."""
    digits = mnist.x_test[:20]
    paths = write_photos(digits, mnist.y_test[:20], tmp_path, suffix=suffix)
    batch, _ = images.load_images(paths)
    assert batch.shape == (20, 28, 28) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() == 1.0
    for prepared, original in zip(batch, digits.astype(np.float32) / 255):
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
    digit = images.to_mnist(picture)
    rows, columns = np.nonzero(digit.any(axis=1))[0], np.nonzero(digit.any(axis=0))[0]
    assert rows[-1] - rows[0] + 1 == 20
    assert columns[-1] - columns[0] + 1 == 4
    assert np.allclose(centre_of_mass(digit), (14, 14), atol=0.5)


def test_pgm_binary_ascii_and_16_bit_read_like_the_png(mnist, tmp_path):
    picture = photo_of(mnist.x_test[1], np.random.default_rng(1))
    Image.fromarray(picture).save(tmp_path / "digit.png")
    height, width = picture.shape
    (tmp_path / "p5.pgm").write_bytes(b"P5\n# a comment\n%d %d\n255\n" % (width, height) + picture.tobytes())
    ascii_pixels = "\n".join(" ".join(str(value) for value in row) for row in picture)
    (tmp_path / "p2.pgm").write_text(f"P2\n{width} {height}\n255\n{ascii_pixels}\n")
    wide = (picture.astype(">u2") * 257).tobytes()
    (tmp_path / "p5-16bit.pgm").write_bytes(b"P5 %d %d 65535\n" % (width, height) + wide)
    batch, _ = images.load_images([tmp_path / name for name in ("digit.png", "p5.pgm", "p2.pgm", "p5-16bit.pgm")])
    for other in batch[1:]:
        np.testing.assert_allclose(other, batch[0], atol=1e-6)


def test_npy_files_single_colour_and_batches(mnist, tmp_path):
    np.save(tmp_path / "batch.npy", mnist.x_test[:3])
    np.save(tmp_path / "floats.npy", mnist.x_test[3].astype(np.float32) / 255)
    rgb = np.repeat(photo_of(mnist.x_test[4], np.random.default_rng(2))[..., None], 3, axis=2)
    np.save(tmp_path / "rgb.npy", rgb)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    batch, names = images.load_images([tmp_path / "batch.npy", tmp_path / "floats.npy", tmp_path / "rgb.npy",
                                       tmp_path / "rgb.png"])
    assert names[:3] == [f"{tmp_path / 'batch.npy'}[{index}]" for index in range(3)]
    np.testing.assert_array_equal(batch[:4], mnist.x_test[:4].astype(np.float32) / 255)
    np.testing.assert_allclose(batch[4], batch[5], atol=0.02)


def test_a_drawing_on_a_transparent_background_reads_as_ink_on_paper(mnist, tmp_path):
    digit = np.asarray(Image.fromarray(mnist.x_test[5]).resize((112, 112)))
    drawing = np.zeros((112, 112, 4), dtype=np.uint8)  # black ink, alpha = ink strength, else transparent
    drawing[..., 3] = digit
    Image.fromarray(drawing, "RGBA").save(tmp_path / "drawing.png")
    Image.fromarray(255 - digit).save(tmp_path / "paper.png")
    batch, _ = images.load_images([tmp_path / "drawing.png", tmp_path / "paper.png"])
    np.testing.assert_allclose(batch[0], batch[1], atol=0.02)


def test_a_blank_picture_has_no_digit():
    with pytest.raises(errors.InputError, match="photo: no digit found"):
        images.to_mnist(np.full((50, 40), 0.9, dtype=np.float32), name="photo")


def test_png_and_jpeg_need_pillow_but_pgm_and_npy_do_not(mnist, tmp_path):
    Image.fromarray(mnist.x_test[0]).save(tmp_path / "digit.png")
    (tmp_path / "digit.pgm").write_bytes(b"P5 28 28 255\n" + mnist.x_test[0].tobytes())
    np.save(tmp_path / "digit.npy", mnist.x_test[0])
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from edge_runtime import images, errors\n"
        f"batch, _ = images.load_images([{str(tmp_path / 'digit.pgm')!r}, {str(tmp_path / 'digit.npy')!r}])\n"
        "assert batch.shape == (2, 28, 28)\n"
        "try:\n"
        f"    images.load_images([{str(tmp_path / 'digit.png')!r}])\n"
        "except errors.InputError as error:\n"
        "    print(error)\n"
    )
    result = run_cli("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{tmp_path / 'digit.png'}: decoding this image format needs Pillow: "
                                     "pip install 'mnist-edge[edge]' (PGM and .npy files need nothing extra)")


def png_claiming_size(width, height):
    """A PNG whose header says width×height (a few bytes of data): refused before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_bad_file(directory, name, content):
    path = directory / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    elif content is not None:
        path.write_bytes(content)
    return path


def truncated_jpeg(mnist):
    import io

    buffer = io.BytesIO()
    Image.fromarray(photo_of(mnist.x_test[0], np.random.default_rng(0))).save(buffer, format="JPEG")
    return buffer.getvalue()[:600]


BAD_FILES = [
    ("missing.png", None, "no such file"),
    ("empty.png", b"", "empty file, not an image"),
    ("notes.png", b"these are my notes, not a picture\n", "not an image"),
    ("huge.png", png_claiming_size(20000, 20000), "megapixels allowed"),
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
def test_predict_refuses_a_bad_image_in_one_line_naming_it(untrained_export, tmp_path, name, content, message):
    path = write_bad_file(tmp_path, name, content)
    result = run_cli("-m", "edge_runtime", "predict", str(untrained_export / "model_int8.tflite"), str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: ") and message in lines[-1], lines[-1]


def test_a_truncated_jpeg_is_refused(untrained_export, mnist, tmp_path):
    path = write_bad_file(tmp_path, "cut.jpg", truncated_jpeg(mnist))
    result = run_cli("-m", "edge_runtime", "predict", str(untrained_export / "model_int8.tflite"), str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: corrupt or truncated image data")


def test_predict_reads_files_directories_and_stdin_and_speaks_json(untrained_export, mnist, tmp_path):
    paths = write_photos(mnist.x_test[:3], mnist.y_test[:3], tmp_path / "photos", suffix=".png")
    model = str(untrained_export / "model_int8.tflite")
    result = run_cli("-m", "edge_runtime", "predict", model, str(tmp_path / "photos"), "-", "--json", "--top-k", "2",
                     stdin_bytes=paths[0].read_bytes())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [entry["file"] for entry in report["predictions"]] == [*map(str, paths), "<stdin>"]
    assert report["predictions"][0] == {**report["predictions"][3], "file": str(paths[0])}
    for entry in report["predictions"]:
        assert len(entry["top_k"]) == 2 and entry["top_k"][0]["label"] == entry["label"]
        assert entry["top_k"][0]["probability"] >= entry["top_k"][1]["probability"]


def test_empty_stdin_is_refused(untrained_export):
    result = run_cli("-m", "edge_runtime", "predict", str(untrained_export / "model_int8.tflite"), "-", stdin_bytes=b"")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: <stdin>: no data (empty input), not an image"


def test_a_picture_reads_the_same_from_a_file_and_from_its_bytes_whatever_its_name(mnist, tmp_path):
    from edge_runtime import preparation

    paths = write_photos(mnist.x_test[:2], mnist.y_test[:2], tmp_path, suffix=".png")
    misnamed = tmp_path / "actually-a-png.jpg"
    misnamed.write_bytes(paths[0].read_bytes())
    digit = preparation.Preparation("digit", "light-on-dark", (28, 28, 1))
    from_files, _ = preparation.prepare_files(paths, digit)
    from_bytes, names = preparation.prepare_files([path.read_bytes() for path in paths], digit, names=["a", "b"])
    from_misnamed, _ = preparation.prepare_files([misnamed], digit)
    np.testing.assert_array_equal(from_files, from_bytes)
    np.testing.assert_array_equal(from_misnamed[0], from_files[0])
    assert names == ["a", "b"] and from_files.shape == (2, 28, 28, 1)
