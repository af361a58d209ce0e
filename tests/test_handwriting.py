"""The handwriting set, the reference preparation and `python -m handwriting`: predict must be at least as
accurate as the reference, and above a floor, on digits that do not come from MNIST."""

import json

import numpy as np
import pytest

from handwriting import evaluate, generate, reference, strokes
from tests.conftest import require, run_cli

# predict on the default set (seed 2024, 12 per digit and style, 960 images) with the trained model:
# 92.4% against the reference's 83.6%. The test runs a smaller cut of it (5 per digit: 400 images),
# too few to compare the styles one by one (50 images each), but not the photos' gap.
ACCURACY_FLOOR = 88.0
# The photos (uneven light, shadow, perspective) are where the reference fails (about 25%): predict must not.
PHOTO_FLOOR = 80.0


def fonts_installed():
    return all((generate.FONT_DIRECTORY / relative).is_file() for files in generate.FONTS.values() for relative in files)


def test_mouse_strokes_are_seeded_and_cover_every_digit():
    for digit in range(10):
        first = strokes.draw(digit, np.random.default_rng(digit), size=140, pen_width=9)
        again = strokes.draw(digit, np.random.default_rng(digit), size=140, pen_width=9)
        np.testing.assert_array_equal(first, again)
        assert 0.03 < (first > 0.5).mean() < 0.4, digit  # ink, but not a blot


def test_reference_centres_the_digit_by_mass_in_the_20_box(tmp_path):
    from PIL import Image

    picture = np.full((120, 200), 220, dtype=np.uint8)
    picture[20:100, 30:50] = 25  # a dark bar, 80 tall and 20 wide, off-centre on light paper
    Image.fromarray(picture).save(tmp_path / "bar.png")
    digit = reference.prepare(tmp_path / "bar.png")
    rows, columns = np.nonzero(digit > 0.5)
    assert rows.max() - rows.min() + 1 == 20 and columns.max() - columns.min() + 1 == 5
    mass_rows, mass_columns = np.indices(digit.shape)
    assert abs((mass_rows * digit).sum() / digit.sum() - 14) <= 0.5
    assert abs((mass_columns * digit).sum() / digit.sum() - 14) <= 0.5


def test_summary_pairs_the_two_preparations_per_style():
    samples = [generate.Sample(f"{style}/{index}.png", index % 10, style, "font") for style in ("pen", "photo")
               for index in range(10)]
    truth = np.array([sample.label for sample in samples])
    predict_labels, reference_labels = truth.copy(), truth.copy()
    reference_labels[10:16] = -1  # the reference fails on six photos, predict on one pen digit
    predict_labels[0] = (truth[0] + 1) % 10
    summary = evaluate.summarize(evaluate.Result(samples, predict_labels, reference_labels))
    assert summary["rows"]["photo"]["only_candidate_right"] == 6 and summary["rows"]["photo"]["only_reference_right"] == 0
    assert summary["rows"]["pen"]["candidate_accuracy"] == 0.9 and summary["rows"]["all"]["difference_points"] == 25.0
    assert summary["predict_confusions"] == {"0→1": 1}
    assert "| photo | 10 | 100.0% | 40.0% | +60.0 pt" in evaluate.format_table(summary)


@pytest.mark.slow  # draws the whole handwriting set twice: about 6 s
def test_the_set_is_seeded_and_labelled(tmp_path):
    require(fonts_installed(), "handwriting fonts not installed: make system-deps")
    first = generate.generate(tmp_path / "a", seed=5, per_digit=1)
    again = generate.generate(tmp_path / "b", seed=5, per_digit=1)
    assert first == again == generate.read_labels(tmp_path / "a")
    assert len(first) == 10 * len(generate.STYLES)
    assert {sample.label for sample in first} == set(range(10))
    for sample in first:
        assert (tmp_path / "a" / sample.file).read_bytes() == (tmp_path / "b" / sample.file).read_bytes(), sample.file
    writers = {sample.writer for sample in first if sample.style != "mouse"}
    assert len(writers) > 20  # several fonts per style


@pytest.mark.slow
def test_predict_beats_the_floor_and_the_reference_on_handwriting(trained, tmp_path):
    require(fonts_installed(), "handwriting fonts not installed: make system-deps")
    result = run_cli("-m", "handwriting", "--model", str(trained / "model_int8.tflite"), "--set-dir",
                     str(tmp_path / "set"), "--per-digit", "5", "--min-accuracy", str(ACCURACY_FLOOR),
                     "--json", str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert rows["all"]["n"] == 400
    assert 100 * rows["all"]["candidate_accuracy"] >= ACCURACY_FLOOR, rows["all"]
    assert rows["all"]["candidate_accuracy"] >= rows["all"]["reference_accuracy"], rows["all"]
    assert 100 * rows["photo"]["candidate_accuracy"] >= PHOTO_FLOOR, rows["photo"]
