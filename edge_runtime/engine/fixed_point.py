"""TFLite's integer requantization arithmetic in numpy, rounding exactly as its C++ kernels do.

TFLite (tensorflow/lite/kernels/internal/common.h/.cc, quantization_util.cc) scales an int32
accumulator by a real factor stored as a 31-bit fixed-point multiplier m and a power-of-two
shift s: x · m · 2^(s − 31). How it rounds is chosen when TFLite is built:

- double rounding (the default, gemmlowp's): SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT. LiteRT's wheels (ai-edge-litert 2.3.0) are built this way: their
  reference conv, depthwise conv and mean kernels match it on every output, and differ from
  single rounding on thousands (measured in tests/test_tflite_numpy.py).
- single rounding (TFLITE_SINGLE_ROUNDING=1): (x·m + 2^(30 − s)) >> (31 − s).

Both are here; ROUNDING selects the one the kernels use. C's integer division truncates toward
zero while numpy's `//` and `>>` floor, so every step is written with the C behaviour in mind.
Arrays are int64 inside, so the product of two int32 values is exact.
"""

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ROUNDING = "double"


def quantize_multiplier(real_multiplier):
    """Split a real factor into TFLite's (multiplier, shift): real ≈ multiplier · 2^(shift − 31).

    As QuantizeMultiplier in quantization_util.cc: frexp, the mantissa rounded half away from
    zero to 31 bits, and factors too small for a shift of −31 flushed to zero.
    Takes a Python float (a C double); returns two Python ints.
    """
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real_multiplier)
    fixed = round_half_away_from_zero(mantissa * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if ROUNDING == "single" and shift > 30:
        return INT32_MAX, 30  # single rounding cannot shift left by more than 30
    return int(fixed), int(shift)


def round_half_away_from_zero(value):
    """std::round for a Python float: halves go away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul: the high 32 bits of 2·a·b, rounded.

    C computes (a·b + nudge) / 2^31 with nudge = 2^30 for a non-negative product and 1 − 2^30
    otherwise, and its division truncates toward zero. Both cases together equal
    floor((a·b + 2^30) / 2^31), which is what is computed here (an arithmetic shift floors).
    The one product that does not fit, INT32_MIN · INT32_MIN, saturates to INT32_MAX.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    result = (a * b + (1 << 30)) >> 31
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    if np.any(overflow):
        result = np.where(overflow, INT32_MAX, result)
    return result


def rounding_divide_by_power_of_two(x, exponent):
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero.

    `exponent` may be an array (one per channel) broadcast against `x`; it must be in [0, 31].
    """
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def wrap_int32(x):
    """Reduce int64 values modulo 2^32 into int32's range, as a C int32 multiplication wraps."""
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding=None):
    """TFLite's MultiplyByQuantizedMultiplier: x · multiplier · 2^(shift − 31), rounded.

    `rounding` "single" or "double" (default: ROUNDING). `multiplier` and `shift` may be
    per-channel arrays broadcast against the last axis of x.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if (rounding or ROUNDING) == "single":
        total_shift = 31 - shift
        return (x * np.asarray(multiplier, dtype=np.int64) + (np.int64(1) << (total_shift - 1))) >> total_shift
    # Double rounding: a positive shift multiplies x by 2^shift first (in int32, wrapping as C
    # does); a negative one divides the rounded high product by 2^−shift.
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    if np.any(left_shift):
        x = wrap_int32(x << left_shift)
    high = saturating_rounding_doubling_high_mul(x, multiplier)
    if np.any(right_shift):
        return rounding_divide_by_power_of_two(high, right_shift)
    return high


def requantize_to_int8(accumulator, multiplier, shift, output_zero_point, activation_min, activation_max):
    """Scale int32 accumulators to the output's int8 scale and clamp to the activation range.

    The tail of TFLite's int8 conv and depthwise conv reference kernels:
    MultiplyByQuantizedMultiplier, plus the output zero point, clamped. Computed in place on an
    int64 `accumulator` to spare temporaries, and identical to multiply_by_quantized_multiplier:
    for double rounding with s ≤ 0, h = floor((x·m + 2^30) / 2^31) (see
    saturating_rounding_doubling_high_mul), then a right shift by r = −s rounding halves away
    from zero, which is floor((h + 2^(r−1) − [h < 0]) / 2^r).
    """
    shift = np.asarray(shift, dtype=np.int64)
    result = np.asarray(accumulator, dtype=np.int64)
    if ROUNDING == "single":
        total_shift = 31 - shift
        result *= np.asarray(multiplier, dtype=np.int64)
        result += np.int64(1) << (total_shift - 1)
        result >>= total_shift
    elif np.any(shift > 0):
        result = multiply_by_quantized_multiplier(result, multiplier, shift)
    else:
        result *= np.asarray(multiplier, dtype=np.int64)
        result += 1 << 30
        result >>= 31
        right_shift = -shift
        if np.all(right_shift > 0):
            result += result >> 63  # −1 where negative: halves then round away from zero
            result += np.int64(1) << (right_shift - 1)
            result >>= right_shift
        elif np.any(right_shift):
            result = rounding_divide_by_power_of_two(result, right_shift)
    result += output_zero_point
    np.clip(result, activation_min, activation_max, out=result)
    return result.astype(np.int8)


def round_scaled_to_int8(accumulator, real_multiplier, output_zero_point, activation_min, activation_max):
    """round(double(acc) · scale) + zero point, clamped: the reference fully-connected kernel's
    requantization, which is done in double precision with C's round (halves away from zero)."""
    product = np.asarray(accumulator, dtype=np.float64) * np.asarray(real_multiplier, dtype=np.float64)
    magnitude = np.abs(product)
    whole = np.floor(magnitude)
    rounded = whole + (magnitude - whole >= 0.5)  # exact, unlike floor(|v| + 0.5)
    result = np.copysign(rounded, product).astype(np.int64)
    result += output_zero_point
    np.clip(result, activation_min, activation_max, out=result)
    return result.astype(np.int8)


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift):
    """MultiplyByQuantizedMultiplierGreaterThanOne (common.h) for a non-negative left shift."""
    if ROUNDING == "single":
        return multiply_by_quantized_multiplier(x, multiplier, left_shift)
    return saturating_rounding_doubling_high_mul(wrap_int32(np.asarray(x, dtype=np.int64) << left_shift), multiplier)


# --- gemmlowp fixed-point helpers used by the int8 softmax (reference/softmax.h) ---

def saturating_shift_left(x, exponent):
    """SaturatingRoundingMultiplyByPOT with a positive exponent: x · 2^exponent, saturated to int32."""
    x = np.asarray(x, dtype=np.int64)
    return np.clip(x << exponent, INT32_MIN, INT32_MAX)


def rounding_half_sum(a, b):
    """gemmlowp's RoundingHalfSum for int32: (a + b + sign) / 2 with C's truncating division."""
    total = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    total = total + np.where(total >= 0, 1, -1)
    return truncating_divide(total, 2)


def truncating_divide(numerator, denominator):
    """C's integer division (toward zero) for int64 arrays and a positive denominator."""
    numerator = np.asarray(numerator, dtype=np.int64)
    quotient = np.abs(numerator) // denominator
    return np.where(numerator < 0, -quotient, quotient)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """exp(a) for a in [−1/4, 0), a and the result in Q0.31: a Taylor series around −1/8."""
    constant_term = 1895147668  # exp(−1/8) in Q0.31
    one_third = 715827883  # 1/3 in Q0.31
    x = a + (1 << 28)  # a + 1/8
    x2 = saturating_rounding_doubling_high_mul(x, x)
    x3 = saturating_rounding_doubling_high_mul(x2, x)
    x4 = saturating_rounding_doubling_high_mul(x2, x2)
    x4_over_4 = rounding_divide_by_power_of_two(x4, 2)
    polynomial = rounding_divide_by_power_of_two(
        saturating_rounding_doubling_high_mul(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + saturating_rounding_doubling_high_mul(constant_term, x + polynomial)


# exp(−2^k) in Q0.31 for k = −2 … 4: the barrel shifter's factors for a Q5.26 input.
EXP_BARREL_SHIFTER = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                      (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits=5):
    """gemmlowp's exp_on_negative_values: exp(a) for a ≤ 0 given in Q(integer_bits).(31−integer_bits),
    returned in Q0.31. The input splits into a remainder in [−1/4, 0) and multiples of powers of two."""
    a = np.asarray(a, dtype=np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, factor in EXP_BARREL_SHIFTER:
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, saturating_rounding_doubling_high_mul(result, factor), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (fractional_bits + 5)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp's 1 / (1 + a) for a in [0, 1) in Q0.31, by three Newton-Raphson steps in Q2.29."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    x = constant_48_over_17 + saturating_rounding_doubling_high_mul(half_denominator, constant_neg_32_over_17)
    one_q2_29 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = saturating_rounding_doubling_high_mul(half_denominator, x)
        one_minus = one_q2_29 - half_denominator_times_x
        x = x + saturating_shift_left(saturating_rounding_doubling_high_mul(x, one_minus), 2)
    return saturating_shift_left(x, 1)


def count_leading_zeros_32(x):
    """Leading zero bits of non-negative int32 values (32 for zero)."""
    x = np.asarray(x, dtype=np.int64)
    bits = np.zeros(x.shape, dtype=np.int64)
    for width in (16, 8, 4, 2, 1):
        fits = x < (np.int64(1) << (32 - width - bits))
        bits = np.where(fits, bits + width, bits)
    return np.where(x == 0, 32, bits)


def reciprocal(x, x_integer_bits):
    """TFLite's GetReciprocal: 1/x for positive x in Q(x_integer_bits), as (Q0.31 value, bits over unit)."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = count_leading_zeros_32(x)
    bits_over_unit = x_integer_bits - headroom_plus_one
    shifted_minus_one = wrap_int32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), bits_over_unit


# --- 16x8 (int16 activations, int8 weights): reference_integer_ops with int64 accumulators ---

def multiply_by_quantized_multiplier_int64(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier for an int64 accumulator (common.cc, the same in both rounding
    builds): the multiplier is first rounded to 15 bits, then one rounding shift, truncated to int32."""
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total_shift = 15 - np.asarray(shift, dtype=np.int64)
    return wrap_int32((x * reduced + (np.int64(1) << (total_shift - 1))) >> total_shift)


def int16_lookup_table(transform, input_scale, input_zero_point, output_scale, output_zero_point):
    """LUTPopulate for int16 with double arithmetic (as the int16 softmax prepares its tables): 513
    values of `transform` over the int16 input range, each nudged so that linear interpolation between
    neighbours errs least at the midpoint; the last value only serves the last slope."""
    input_min = input_scale * (-32768 - input_zero_point)
    input_max = input_scale * (32767 - input_zero_point)
    output_min = output_scale * (-32768 - output_zero_point)
    output_max = output_scale * (32767 - output_zero_point)
    steps = 512
    step = (input_max - input_min) / steps
    half_step = step / 2
    scaling = 65536.0 / (output_max - output_min)
    table = []
    for i in range(steps):
        value = transform(input_min + i * step)
        midpoint = transform(input_min + i * step + half_step)
        following = transform(input_min + (i + 1) * step)
        sample = round_half_away_from_zero(value * scaling)
        interpolated = round_half_away_from_zero((following * scaling + sample) / 2)
        error = interpolated - round_half_away_from_zero(midpoint * scaling)
        table.append(min(max(sample - round_half_away_from_zero(error / 2), -32768), 32767))
    table.append(min(max(round_half_away_from_zero(transform(input_max) * scaling), -32768), 32767))
    return np.array(table, dtype=np.int64)


def int16_table_lookup(values, table):
    """LUTLookup for int16: the table's value at the top 9 bits, interpolated by the low 7 bits."""
    values = np.asarray(values, dtype=np.int64)
    index = 256 + (values >> 7)
    offset = values & 0x7F
    base = table[index]
    slope = table[index + 1] - base
    return wrap_int16(base + ((slope * offset + 64) >> 7))


def wrap_int16(x):
    """Reduce int64 values modulo 2^16 into int16's range, as a C cast to int16_t does."""
    return ((np.asarray(x, dtype=np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)
