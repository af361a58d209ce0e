"""Exact paired statistics: Clopper-Pearson, exact McNemar, per-class accuracy, confusion matrix."""

import json
import math

import numpy as np
import pytest

from edge_runtime import statistics


def _paired(both_right, only_reference_right, only_candidate_right, both_wrong, seed=0):
    """Correctness flags with the given 2x2 counts, shuffled so that order does not matter."""
    reference = [True] * both_right + [True] * only_reference_right + [False] * only_candidate_right + [False] * both_wrong
    candidate = [True] * both_right + [False] * only_reference_right + [True] * only_candidate_right + [False] * both_wrong
    order = np.random.default_rng(seed).permutation(len(reference))
    return np.array(reference)[order], np.array(candidate)[order]


def _exact_tails(k, m, p):
    """P[X <= k] and P[X >= k] for X ~ Binomial(m, p), summed directly with math.comb (small m)."""
    pmf = [math.comb(m, i) * p**i * (1 - p) ** (m - i) for i in range(m + 1)]
    return sum(pmf[: k + 1]), sum(pmf[k:])


# --- Clopper-Pearson -----------------------------------------------------------------------------


def test_clopper_pearson_known_value():
    low, high = statistics.clopper_pearson(3, 10)
    assert low == pytest.approx(0.06673951, abs=1e-7)
    assert high == pytest.approx(0.65245285, abs=1e-7)


def test_clopper_pearson_edges_are_closed_form():
    # k = 0: low 0, high solves (1 - p)^m = alpha/2; k = m: high 1, low solves p^m = alpha/2.
    assert statistics.clopper_pearson(0, 5) == pytest.approx((0.0, 1 - 0.025 ** (1 / 5)), abs=1e-12)
    assert statistics.clopper_pearson(5, 5) == pytest.approx((0.025 ** (1 / 5), 1.0), abs=1e-12)
    assert statistics.clopper_pearson(1, 1) == pytest.approx((0.025, 1.0), abs=1e-12)
    assert statistics.clopper_pearson(0, 1) == pytest.approx((0.0, 0.975), abs=1e-12)
    low, high = statistics.clopper_pearson(0, 7)
    assert low == 0.0 and 0 < high < 1
    low, high = statistics.clopper_pearson(7, 7)
    assert high == 1.0 and 0 < low < 1


def test_clopper_pearson_confidence_level_changes_width():
    narrow = statistics.clopper_pearson(3, 10, confidence=0.5)
    wide = statistics.clopper_pearson(3, 10, confidence=0.99)
    default = statistics.clopper_pearson(3, 10)
    assert wide[0] < default[0] < narrow[0] < 0.3 < narrow[1] < default[1] < wide[1]


@pytest.mark.parametrize(("k", "m"), [(1, 4), (3, 10), (7, 12), (19, 20)])
def test_clopper_pearson_bounds_hit_the_binomial_tails(k, m):
    low, high = statistics.clopper_pearson(k, m)
    assert _exact_tails(k, m, low)[1] == pytest.approx(0.025, abs=1e-10)
    assert _exact_tails(k, m, high)[0] == pytest.approx(0.025, abs=1e-10)


@pytest.mark.parametrize(("k", "m"), [(2, 9), (6, 15)])
def test_clopper_pearson_matches_brute_force_grid_search(k, m):
    step = 1e-5
    grid = np.arange(0, 1 + step / 2, step)
    i = np.arange(m + 1)[:, None]
    coefficients = np.array([math.comb(m, j) for j in range(m + 1)], dtype=float)[:, None]
    pmf = coefficients * grid**i * (1 - grid) ** (m - i)
    upper_tail = pmf[k:].sum(axis=0)  # P[X >= k | p], increasing in p
    lower_tail = pmf[: k + 1].sum(axis=0)  # P[X <= k | p], decreasing in p
    brute_low = grid[np.argmax(upper_tail >= 0.025)]
    brute_high = grid[np.flatnonzero(lower_tail >= 0.025)[-1]]
    low, high = statistics.clopper_pearson(k, m)
    assert low == pytest.approx(brute_low, abs=step)
    assert high == pytest.approx(brute_high, abs=step)


def test_clopper_pearson_large_m_is_finite_and_ordered():
    for k in (0, 1, 4900, 9999, 10000):
        low, high = statistics.clopper_pearson(k, 10000)
        assert 0.0 <= low <= k / 10000 <= high <= 1.0
    # k = 1: P[X >= 1] = 1 - (1 - p)^m = 0.025.
    assert statistics.clopper_pearson(1, 10000)[0] == pytest.approx(-math.log1p(-0.025) / 10000, rel=1e-4)


@pytest.mark.parametrize(("k", "m"), [(0, 0), (1, 0), (-1, 5), (6, 5), (1.5, 5)])
def test_clopper_pearson_rejects_bad_counts(k, m):
    with pytest.raises(ValueError):
        statistics.clopper_pearson(k, m)


def test_clopper_pearson_rejects_bad_confidence():
    with pytest.raises(ValueError):
        statistics.clopper_pearson(3, 10, confidence=1.0)


# --- exact binomial (McNemar) p-value ------------------------------------------------------------


def test_p_value_all_in_one_direction():
    assert statistics.binomial_two_sided_p_value(0, 5) == 0.0625  # 2 * (1/2)^5
    assert statistics.binomial_two_sided_p_value(5, 5) == 0.0625


@pytest.mark.parametrize("m", [2, 10, 100, 10000])
def test_p_value_at_half_is_one(m):
    assert statistics.binomial_two_sided_p_value(m // 2, m) == 1.0


def test_p_value_by_hand_with_math_comb():
    # k = 2, m = 10: P[X <= 2] = (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 56 / 1024.
    expected = 2 * sum(math.comb(10, i) for i in range(3)) / 2**10
    assert expected == 0.109375
    assert statistics.binomial_two_sided_p_value(2, 10) == expected
    assert statistics.binomial_two_sided_p_value(8, 10) == expected
    # k = 1, m = 4: 2 * (1 + 4) / 16.
    assert statistics.binomial_two_sided_p_value(1, 4) == 0.625


def test_p_value_no_trials_is_one():
    assert statistics.binomial_two_sided_p_value(0, 0) == 1.0


def test_p_value_large_m_no_overflow():
    assert statistics.binomial_two_sided_p_value(0, 10000) == 0.0  # 2^-9999 is below the smallest double
    p = statistics.binomial_two_sided_p_value(4900, 10000)
    assert 0.04 < p < 0.05  # normal approximation with continuity correction: ~0.0466
    assert p == statistics.binomial_two_sided_p_value(5100, 10000)
    tiny = statistics.binomial_two_sided_p_value(4000, 10000)
    assert 0.0 < tiny < 1e-80 and math.isfinite(tiny)


# --- paired comparison ---------------------------------------------------------------------------


def test_identical_predictions_have_no_difference():
    reference, _ = _paired(90, 0, 0, 10)
    result = statistics.paired_comparison(reference, reference.copy())
    assert result["discordant"] == 0
    assert result["difference_points"] == 0.0
    assert (result["ci_low_points"], result["ci_high_points"]) == (0.0, 0.0)
    assert result["p_value"] == 1.0
    assert result["reference_accuracy"] == result["candidate_accuracy"] == 0.9
    assert isinstance(result["method"], str) and "McNemar" in result["method"]


def test_one_image_only_the_candidate_gets_right():
    reference, candidate = _paired(40, 0, 1, 9)
    result = statistics.paired_comparison(reference, candidate)
    n = 50
    assert (result["only_candidate_right"], result["only_reference_right"], result["discordant"]) == (1, 0, 1)
    assert result["p_value"] == 1.0
    assert result["difference_points"] == pytest.approx(100 / n)
    # Clopper-Pearson for k = 1, m = 1 is (0.025, 1).
    assert result["ci_low_points"] == pytest.approx(100 * 1 * (2 * 0.025 - 1) / n)  # -1.9
    assert result["ci_high_points"] == pytest.approx(100 * 1 * (2 * 1 - 1) / n)  # 2.0


def test_one_image_only_the_reference_gets_right():
    reference, candidate = _paired(40, 1, 0, 9)
    result = statistics.paired_comparison(reference, candidate)
    n = 50
    assert (result["only_candidate_right"], result["only_reference_right"], result["discordant"]) == (0, 1, 1)
    assert result["p_value"] == 1.0
    assert result["difference_points"] == pytest.approx(-100 / n)
    # Clopper-Pearson for k = 0, m = 1 is (0, 0.975).
    assert result["ci_low_points"] == pytest.approx(100 * 1 * (2 * 0 - 1) / n)  # -2.0
    assert result["ci_high_points"] == pytest.approx(100 * 1 * (2 * 0.975 - 1) / n)  # 1.9


def test_mixed_case_counts_and_values():
    reference, candidate = _paired(90, 6, 2, 2)
    result = statistics.paired_comparison(reference, candidate)
    assert result["n"] == 100
    assert result["both_right"] == 90 and result["both_wrong"] == 2
    assert result["only_reference_right"] == 6 and result["only_candidate_right"] == 2
    assert result["discordant"] == 8
    assert result["reference_accuracy"] == pytest.approx(0.96)
    assert result["candidate_accuracy"] == pytest.approx(0.92)
    assert result["difference_points"] == pytest.approx(-4.0)
    # Exact McNemar: 2 * P[X <= 2], X ~ Binomial(8, 1/2) = 2 * (1 + 8 + 28) / 256.
    assert result["p_value"] == 74 / 256
    p_low, p_high = statistics.clopper_pearson(2, 8)
    assert result["ci_low_points"] == pytest.approx(100 * 8 * (2 * p_low - 1) / 100)
    assert result["ci_high_points"] == pytest.approx(100 * 8 * (2 * p_high - 1) / 100)
    assert result["ci_low_points"] < result["difference_points"] < result["ci_high_points"]
    assert result["ci_low_points"] >= -8.0 and result["ci_high_points"] <= 8.0  # at most m / N


def test_swapping_reference_and_candidate_mirrors_the_result():
    reference, candidate = _paired(90, 6, 2, 2)
    forward = statistics.paired_comparison(reference, candidate)
    backward = statistics.paired_comparison(candidate, reference)
    assert backward["difference_points"] == pytest.approx(-forward["difference_points"])
    assert backward["ci_low_points"] == pytest.approx(-forward["ci_high_points"])
    assert backward["ci_high_points"] == pytest.approx(-forward["ci_low_points"])
    assert backward["p_value"] == forward["p_value"]


def test_accepts_0_1_integers_like_booleans():
    reference, candidate = _paired(90, 6, 2, 2)
    as_bool = statistics.paired_comparison(reference, candidate)
    as_int = statistics.paired_comparison(reference.astype(np.int64), candidate.astype(np.uint8))
    assert as_bool == as_int


def test_large_n_is_finite_and_json_ready():
    rng = np.random.default_rng(1)
    reference = rng.random(10000) < 0.99
    candidate = reference.copy()
    flip = rng.choice(10000, size=60, replace=False)
    candidate[flip] = ~candidate[flip]
    result = statistics.paired_comparison(reference, candidate)
    assert result["n"] == 10000 and result["discordant"] == 60
    numbers = [result[key] for key in ("difference_points", "ci_low_points", "ci_high_points", "p_value")]
    assert all(math.isfinite(value) for value in numbers)
    assert -100 <= result["ci_low_points"] <= result["difference_points"] <= result["ci_high_points"] <= 100
    assert 0.0 <= result["p_value"] <= 1.0
    for key, value in result.items():
        assert type(value) in (int, float, str), (key, type(value))
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("reference", "candidate"),
    [
        (np.ones(5, bool), np.ones(6, bool)),  # different lengths
        (np.ones((2, 3), bool), np.ones((2, 3), bool)),  # not 1-D
        (np.ones(0, bool), np.ones(0, bool)),  # no images
        (np.array([0, 1, 2]), np.array([0, 1, 1])),  # not booleans
    ],
)
def test_paired_comparison_rejects_bad_input(reference, candidate):
    with pytest.raises(ValueError):
        statistics.paired_comparison(reference, candidate)


# --- per-class accuracy and confusion matrix -----------------------------------------------------


def test_per_class_accuracy_with_an_empty_class():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2, 2, 2, 2])
    accuracy = statistics.per_class_accuracy(labels, predictions, classes=4)
    assert accuracy.dtype == np.float64 and accuracy.shape == (4,)
    assert accuracy[:3] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert np.isnan(accuracy[3])  # class 3 has no images (it is never predicted either)


def test_per_class_accuracy_has_one_value_per_class():
    labels = np.arange(10).repeat(3)
    accuracy = statistics.per_class_accuracy(labels, labels, 10)
    assert accuracy.shape == (10,) and np.all(accuracy == 1.0)
    assert statistics.per_class_accuracy(np.array([0, 1, 2]), np.array([0, 0, 2]), 3).tolist() == [1.0, 0.0, 1.0]


def test_confusion_matrix_counts_and_sums():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 500)
    predictions = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 10, 500))
    matrix = statistics.confusion_matrix(labels, predictions, 10)
    assert matrix.dtype == np.int64 and matrix.shape == (10, 10)
    assert matrix.sum() == 500
    assert np.array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))  # rows: true class
    assert np.array_equal(matrix.sum(axis=0), np.bincount(predictions, minlength=10))  # columns: predicted
    assert np.trace(matrix) == np.sum(labels == predictions)
    per_class = statistics.per_class_accuracy(labels, predictions, 10)
    assert per_class == pytest.approx(np.diag(matrix) / matrix.sum(axis=1))


def test_confusion_matrix_small_by_hand():
    matrix = statistics.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


@pytest.mark.parametrize(
    ("labels", "predictions"),
    [([0, 1], [0]), ([0, 10], [0, 1]), ([0, -1], [0, 1]), ([0.0, 1.0], [0, 1])],
)
def test_label_functions_reject_bad_input(labels, predictions):
    with pytest.raises(ValueError):
        statistics.confusion_matrix(np.array(labels), np.array(predictions), 10)
    with pytest.raises(ValueError):
        statistics.per_class_accuracy(np.array(labels), np.array(predictions), 10)


def test_counts_give_what_the_flags_give():
    reference, candidate = _paired(80, 7, 3, 10)
    from_flags = statistics.paired_comparison(reference, candidate)
    from_counts = statistics.paired_comparison_from_counts(80, 7, 3, 10)
    assert from_counts == from_flags and from_counts["discordant"] == 10 and from_counts["n"] == 100


@pytest.mark.parametrize("cells", [(0, 0, 0, 0), (-1, 2, 3, 4), (1.5, 2, 3, 4), (True, 2, 3, 4)])
def test_counts_are_checked(cells):
    with pytest.raises(ValueError):
        statistics.paired_comparison_from_counts(*cells)
