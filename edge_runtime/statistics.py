"""Exact, paired statistics for comparing two classifiers on the same images (compare and serve both use it).

Every model in the comparison is run on the *same* test images, so the two accuracies are not
independent samples: an image that is easy for the float model is usually easy for the int8 model
too. Treating them as two independent proportions (a two-sample z-test, or two separate intervals
that "overlap") throws that pairing away and gives intervals far too wide to see a 0.1-point change.

Paired, each image falls into one of four cells:

    both right | only the reference right (n10) | only the candidate right (n01) | both wrong

The concordant cells (both right, both wrong) say nothing about which model is better; only the
m = n10 + n01 *discordant* images carry information. Under "the two models are equally accurate"
each discordant image is a fair coin flip, so n01 ~ Binomial(m, 1/2): McNemar's test, done exactly
with the binomial distribution rather than the chi-squared approximation, because m is often tiny
(a quantized model may disagree with its float original on only a handful of images).

The accuracy difference is (n01 - n10) / N = m (2p - 1) / N with p = n01 / m. Conditioning on m, the
exact Clopper-Pearson interval for p maps to an interval for the difference. It is conservative
(covers at least the nominal level) and well defined for m = 0 or 1, where Wald intervals collapse.

Only numpy and the standard library: binomial tails are summed in log space (exact integers for the
p = 1/2 case) and the Clopper-Pearson bounds are found by bisection on the binomial tail, which is
exact to double precision and robust for N up to the full test set and beyond.
"""

import math

import numpy as np

METHOD = (
    "exact McNemar test (two-sided binomial on discordant pairs); "
    "conditional exact (Clopper-Pearson) interval on discordant pairs"
)

_BISECTION_STEPS = 200


def _check_counts(k, m):
    if isinstance(k, bool) or isinstance(m, bool):
        raise ValueError(f"counts must be integers, got k={k!r}, m={m!r}")
    try:
        k_int, m_int = int(k), int(m)
    except (TypeError, ValueError):
        raise ValueError(f"counts must be integers, got k={k!r}, m={m!r}") from None
    if k_int != k or m_int != m:
        raise ValueError(f"counts must be integers, got k={k!r}, m={m!r}")
    if m_int < 0 or not 0 <= k_int <= m_int:
        raise ValueError(f"need 0 <= k <= m, got k={k_int}, m={m_int}")
    return k_int, m_int


def _log_binomial_coefficients(m):
    """log C(m, i) for i = 0..m, as a numpy array."""
    log_factorials = np.array([math.lgamma(i + 1) for i in range(m + 1)])
    return log_factorials[m] - log_factorials - log_factorials[::-1]


def _log_sum_exp(values):
    peak = values.max()
    return float(peak + np.log(np.exp(values - peak).sum()))


def _log_tail(log_coefficients, m, k, p, upper):
    """log P[X >= k] (upper) or log P[X <= k] (not upper) for X ~ Binomial(m, p), 0 < p < 1."""
    i = np.arange(m + 1)
    log_pmf = log_coefficients + i * math.log(p) + (m - i) * math.log1p(-p)
    return _log_sum_exp(log_pmf[k:] if upper else log_pmf[: k + 1])


def _bisect(function, target):
    """The p in (0, 1) where the increasing `function(p)` crosses `target`."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high:
            break
        if function(middle) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def clopper_pearson(k, m, confidence=0.95):
    """The exact (Clopper-Pearson) two-sided interval for a binomial proportion k / m.

    The lower bound is the p with P[X >= k | p] = alpha/2, the upper bound the p with
    P[X <= k | p] = alpha/2 (alpha = 1 - confidence); k = 0 gives 0 and k = m gives 1.
    """
    k, m = _check_counts(k, m)
    if m == 0:
        raise ValueError("no trials (m = 0): the proportion is undefined")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    log_half_alpha = math.log((1.0 - confidence) / 2.0)
    # Closed forms at the edges: P[X >= m | p] = p^m and P[X <= 0 | p] = (1 - p)^m.
    if k == 0:
        low = 0.0
    elif k == m:
        low = math.exp(log_half_alpha / m)
    if k == m:
        high = 1.0
    elif k == 0:
        high = -math.expm1(log_half_alpha / m)
    if 0 < k < m:
        log_coefficients = _log_binomial_coefficients(m)
        # P[X >= k | p] increases with p; P[X <= k | p] decreases, so bisect on its negative.
        low = _bisect(lambda p: _log_tail(log_coefficients, m, k, p, upper=True), log_half_alpha)
        high = _bisect(lambda p: -_log_tail(log_coefficients, m, k, p, upper=False), -log_half_alpha)
    return float(low), float(high)


def binomial_two_sided_p_value(k, m):
    """Exact two-sided p-value for k successes in m trials when p = 1/2 (m = 0 gives 1.0).

    min(1, 2 * min(P[X <= k], P[X >= k])), summed in exact integers; the one division at the end
    is correctly rounded, so large m neither overflows nor loses precision (a p-value below the
    smallest double becomes 0.0).
    """
    k, m = _check_counts(k, m)
    if m == 0:
        return 1.0
    # By symmetry at p = 1/2, P[X >= k] = P[X <= m - k]: the smaller tail ends at min(k, m - k).
    end = min(k, m - k)
    coefficient, tail = 1, 1  # C(m, 0)
    for i in range(end):
        coefficient = coefficient * (m - i) // (i + 1)
        tail += coefficient
    return min(1.0, (2 * tail) / (1 << m))


def _as_correct_flags(values, name):
    array = np.asarray(values)
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1")
        array = array.astype(bool)
    return array


def paired_comparison(reference_correct, candidate_correct, confidence=0.95):
    """Compare two classifiers' per-image correctness on the same N images (see the module doc).

    Returns a JSON-ready dict: accuracies, the difference in percentage points (candidate minus
    reference) with its conditional exact interval, the 2x2 counts and the exact McNemar p-value.
    """
    reference = _as_correct_flags(reference_correct, "reference_correct")
    candidate = _as_correct_flags(candidate_correct, "candidate_correct")
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if reference.ndim != 1:
        raise ValueError(f"expected 1-D arrays (one flag per image), got shape {reference.shape}")
    if reference.shape[0] == 0:
        raise ValueError("no images to compare")
    return paired_comparison_from_counts(
        both_right=int(np.sum(reference & candidate)),
        only_reference_right=int(np.sum(reference & ~candidate)),
        only_candidate_right=int(np.sum(~reference & candidate)),
        both_wrong=int(np.sum(~reference & ~candidate)),
        confidence=confidence,
    )


def paired_comparison_from_counts(both_right, only_reference_right, only_candidate_right, both_wrong,
                                  confidence=0.95):
    """`paired_comparison` from the four cells of the paired table instead of per-image flags.

    A running service keeps these four counts (memory that does not grow with traffic); compare
    has the flags. Both end here, so the same pairs give the same numbers.
    Raises: ValueError for negative or non-integer counts, or no pairs at all.
    """
    cells = (both_right, only_reference_right, only_candidate_right, both_wrong)
    if any(isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 0 for cell in cells):
        raise ValueError(f"the four counts must be integers >= 0, got {cells}")
    both_right, only_reference_right, only_candidate_right, both_wrong = (int(cell) for cell in cells)
    n = both_right + only_reference_right + only_candidate_right + both_wrong
    if n == 0:
        raise ValueError("no images to compare")
    discordant = only_reference_right + only_candidate_right

    if discordant == 0:
        ci_low, ci_high = 0.0, 0.0
    else:
        p_low, p_high = clopper_pearson(only_candidate_right, discordant, confidence)
        ci_low = 100.0 * discordant * (2.0 * p_low - 1.0) / n
        ci_high = 100.0 * discordant * (2.0 * p_high - 1.0) / n

    return {
        "n": n,
        "reference_accuracy": (both_right + only_reference_right) / n,
        "candidate_accuracy": (both_right + only_candidate_right) / n,
        "difference_points": 100.0 * (only_candidate_right - only_reference_right) / n,
        "both_right": both_right,
        "both_wrong": both_wrong,
        "only_reference_right": only_reference_right,
        "only_candidate_right": only_candidate_right,
        "discordant": discordant,
        "ci_low_points": float(ci_low),
        "ci_high_points": float(ci_high),
        "p_value": float(binomial_two_sided_p_value(only_candidate_right, discordant)),
        "method": METHOD,
    }


def _check_labels(labels, predictions, classes):
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of the same length, got {labels.shape} and {predictions.shape}")
    for name, array in (("labels", labels), ("predictions", predictions)):
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= classes):
            raise ValueError(f"{name} must be in [0, {classes}), got values in [{array.min()}, {array.max()}]")
    return labels.astype(np.int64), predictions.astype(np.int64)


def per_class_accuracy(labels, predictions, classes):
    """Accuracy on the images of each true class (float array of length `classes`; NaN if no images)."""
    labels, predictions = _check_labels(labels, predictions, classes)
    totals = np.bincount(labels, minlength=classes).astype(np.float64)
    correct = np.bincount(labels[labels == predictions], minlength=classes).astype(np.float64)
    accuracy = np.full(classes, np.nan)
    present = totals > 0
    accuracy[present] = correct[present] / totals[present]
    return accuracy


def confusion_matrix(labels, predictions, classes):
    """Counts indexed [true class, predicted class] (int64, shape classes x classes)."""
    labels, predictions = _check_labels(labels, predictions, classes)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix
