"""The shared preprocessing contract: scaling, layout, and the int8 quantize/dequantize maths."""

import numpy as np
import pytest

from edge_runtime import errors, preprocessing

MNIST = (28, 28, 1)


def test_uint8_pixels_scale_by_1_over_255_into_nhwc():
    image = np.array([[0, 255], [51, 102]], dtype=np.uint8).repeat(14, axis=0).repeat(14, axis=1)
    model_input = preprocessing.to_model_input(image, MNIST)
    assert model_input.shape == (1, 28, 28, 1) and model_input.dtype == np.float32
    assert model_input[0, 0, 0, 0] == 0.0 and model_input[0, 0, 27, 0] == 1.0
    assert model_input[0, 27, 0, 0] == pytest.approx(0.2)


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (5, 28, 28), (5, 28, 28, 1)])
def test_accepted_shapes_become_a_batch(shape):
    assert preprocessing.to_model_input(np.zeros(shape, np.float32), MNIST).shape[1:] == (28, 28, 1)


@pytest.mark.parametrize("shape", [(32, 32, 3), (4, 32, 32, 3)])
def test_colour_inputs_keep_their_channels(shape):
    assert preprocessing.to_model_input(np.zeros(shape, np.uint8), (32, 32, 3)).shape[1:] == (32, 32, 3)


def test_a_colour_model_refuses_grey_images_naming_the_expected_shape():
    with pytest.raises(errors.InputError, match="expected shape \\(32, 32, 3\\) or \\(N, 32, 32, 3\\), got \\(32, 32\\)"):
        preprocessing.to_model_input(np.zeros((32, 32), np.uint8), (32, 32, 3))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((28, 27), np.uint8), "expected shape .* got \\(28, 27\\)"),
        (np.zeros((2, 28, 28, 3), np.uint8), "got \\(2, 28, 28, 3\\)"),
        (np.zeros((0, 28, 28), np.uint8), "empty batch"),
        (np.full((28, 28), np.nan, np.float32), "NaN or infinite"),
        (np.full((28, 28), 2.0, np.float32), "must be in \\[0, 1\\]"),
        (np.zeros((28, 28), np.int64), "expected uint8 or float pixels, got dtype int64"),
        (np.array([["a"] * 28] * 28), "got dtype <U1"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason(array, message):
    with pytest.raises(errors.InputError, match=f"digits.npy: .*{message}"):
        preprocessing.to_model_input(array, MNIST, name="digits.npy")


def test_quantize_matches_the_tflite_formula_by_hand():
    # scale 1/255, zero point -128: the usual int8 input quantization of [0, 1] images.
    values = np.array([0.0, 1.0, 0.2, 2.0, -1.0], np.float32)
    # 0 -> -128, 1 -> 255 - 128 = 127, 0.2 -> 51 - 128 = -77; out-of-range values are clipped.
    assert preprocessing.quantize(values, 1 / 255, -128).tolist() == [-128, 127, -77, 127, -128]
    # Halves round away from zero, as TFLite's QUANTIZE does (C's round): 0.5 -> 1, 1.5 -> 2,
    # 2.5 -> 3, -0.5 -> -1, -2.5 -> -3. (Half to even would give 0, 2, 2, 0, -2.)
    ties = np.array([0.25, 0.75, 1.25, -0.25, -1.25])
    assert preprocessing.quantize(ties, 0.5, 0).tolist() == [1, 2, 3, -1, -3]
    # Just below a tie stays below it, even where float32 addition of 0.5 would round up.
    assert preprocessing.quantize(np.array([np.nextafter(np.float32(0.5), np.float32(0))]), 1.0, 0).tolist() == [0]


def test_dequantize_inverts_quantize_within_half_a_step():
    scale, zero_point = 0.0123, 5
    values = np.linspace(-1.6, 1.5, 101, dtype=np.float32)
    round_trip = preprocessing.dequantize(preprocessing.quantize(values, scale, zero_point), scale, zero_point)
    assert np.abs(round_trip - values).max() <= scale / 2 + 1e-7


def test_dequantize_of_softmax_output_parameters():
    # Softmax outputs in int8 use scale 1/256 and zero point -128: -128 means 0, 127 means 255/256.
    assert preprocessing.dequantize(np.array([-128, 127], np.int8), 1 / 256, -128).tolist() == [0.0, 255 / 256]


def test_quantize_refuses_a_non_positive_scale():
    with pytest.raises(ValueError, match="scale must be positive"):
        preprocessing.quantize(np.zeros(3), 0.0, 0)
