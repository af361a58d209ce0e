"""The numpy engine (edge_runtime.engine.interpreter) against LiteRT's reference kernels, and its pieces.

Fixed-point helpers are checked against values worked out by hand from the C definitions; every
operator against LiteRT with OpResolverType.BUILTIN_REF, on small converted models, in both
arithmetics (BLAS float and integer); bad files and unsupported models against their one-line
errors.
"""

import numpy as np
import pytest

from edge_runtime import backends, classifier, errors
from edge_runtime.engine import fixed_point, interpreter as numpy_engine
from tests import int8_test_models

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ARITHMETICS = ("float", "integer")


# --- fixed point, by hand from the C definitions ---

@pytest.mark.parametrize(("a", "b", "expected"), [
    (INT32_MIN, INT32_MIN, INT32_MAX),  # the one overflow: saturates
    (1 << 30, 1 << 30, 1 << 29),  # 0.5 · 0.5 = 0.25
    (5, 1 << 30, 3),  # 2.5 rounds up
    (-5, 1 << 30, -2),  # −2.5: C truncates (−6·2^30 + 1) / 2^31 = −2.99… to −2; floor would give −3
    (-3, 1 << 30, -1),  # −1.5 → −1
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),
    (INT32_MIN, INT32_MAX, -INT32_MAX),
])
def test_saturating_rounding_doubling_high_mul_matches_c(a, b, expected):
    assert int(fixed_point.saturating_rounding_doubling_high_mul(a, b)) == expected


@pytest.mark.parametrize(("x", "exponent", "expected"), [
    (5, 1, 3), (-5, 1, -3),  # halves go away from zero
    (7, 2, 2), (-7, 2, -2), (-6, 2, -2), (6, 2, 2), (-4, 2, -1), (-1, 2, 0), (1, 1, 1), (-1, 1, -1),
    (123, 0, 123), (INT32_MIN, 31, -1), (INT32_MAX, 31, 1),
])
def test_rounding_divide_by_power_of_two_matches_c(x, exponent, expected):
    assert int(fixed_point.rounding_divide_by_power_of_two(x, exponent)) == expected


@pytest.mark.parametrize(("real", "expected"), [
    (0.0, (0, 0)), (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (1610612736, 0)),
    (1 - 2.0 ** -40, (1 << 30, 1)),  # the mantissa rounds up to 2^31: halved, shift + 1
    (2.0 ** -40, (0, 0)),  # below 2^−31: flushed to zero
    (0.1, (1717986918, -3)),
])
def test_quantize_multiplier_matches_tflite(real, expected):
    assert fixed_point.quantize_multiplier(real) == expected


def test_double_and_single_rounding_differ_where_the_c_code_does():
    # 3 · 0.5 · 2^−2 = 0.375. Double rounding: SRDHM gives round(1.5) = 2, then 2 / 4 = 0.5 → 1.
    # Single rounding rounds 0.375 once → 0.
    assert int(fixed_point.multiply_by_quantized_multiplier(3, 1 << 30, -2, rounding="double")) == 1
    assert int(fixed_point.multiply_by_quantized_multiplier(3, 1 << 30, -2, rounding="single")) == 0
    assert int(fixed_point.multiply_by_quantized_multiplier(-3, 1 << 30, -2, rounding="double")) == 0
    # A positive shift multiplies first: 100 · 2^2 · 0.5 = 200.
    assert int(fixed_point.multiply_by_quantized_multiplier(100, 1 << 30, 2)) == 200


def test_the_fast_requantization_equals_the_step_by_step_one():
    generator = np.random.default_rng(0)
    accumulators = generator.integers(-(1 << 24), 1 << 24, size=(2000, 6))
    multipliers = generator.integers(1 << 30, INT32_MAX, size=6)
    for shifts in ([-9, -8, -12, -1, -20, -3], [0, -1, 0, -5, -2, -31], [1, 0, -3, 2, -1, 0]):
        expected = np.clip(fixed_point.multiply_by_quantized_multiplier(accumulators, multipliers, shifts) + 5, -128, 127)
        got = fixed_point.requantize_to_int8(accumulators.copy(), multipliers, np.array(shifts), 5, -128, 127)
        assert np.array_equal(got, expected), shifts


def test_fixed_point_exp_and_reciprocal_are_close_to_the_real_functions():
    # exp of 0 is exactly one (INT32_MAX in Q0.31); exp(−1) and exp(−3) within a few units of 2^−31.
    values = np.array([0, -(1 << 26), -3 * (1 << 26)])  # Q5.26
    exps = fixed_point.exp_on_negative_values(values)
    assert exps[0] == INT32_MAX
    assert np.allclose(exps[1:] / 2.0 ** 31, np.exp([-1.0, -3.0]), atol=1e-8)
    # 1/3 = (2/3) · 2^−1: GetReciprocal of 3.0 in Q12.19 gives 2/3 in Q0.31 and one bit over unit.
    inverse, bits_over_unit = fixed_point.reciprocal(np.array([3 << 19]), 12)
    assert bits_over_unit[0] == 1 and inverse[0] / 2.0 ** 31 == pytest.approx(2 / 3, abs=1e-8)


# --- the engine against LiteRT's reference kernels ---

@pytest.fixture(scope="session")
def converted():
    """The test models of tests/int8_test_models.py, converted to int8 TFLite and checked in under
    tests/fixtures/engine/ (tests/fixtures/regenerate.py makes them; tests/test_fixture.py checks it still does)."""
    paths = {path.stem: path for path in sorted(int8_test_models.FIXTURE_DIRECTORY.glob("*.tflite"))}
    missing = {*int8_test_models.BUILDERS, "colour_float_io"} - set(paths)
    if missing:
        pytest.fail(f"{int8_test_models.FIXTURE_DIRECTORY}: missing {sorted(missing)}; "
                    "run python -m tests.fixtures.regenerate")
    return paths


def litert_reference(path):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference")
    return litert.Interpreter(model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)


def model_inputs(interpreter, grey_images):
    details = interpreter.get_input_details()[0]
    images = int8_test_models.images_for(tuple(details["shape"][1:]), grey_images)
    if details["dtype"] == np.float32:
        return images
    scale, zero_point = details["quantization"]
    return np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)


def run(interpreter, batch):
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("name", ["seed_like", "batchnorm_gap", "colour", "colour_float_io"])
def test_every_op_output_equals_litert_reference_kernels(converted, digits, name, arithmetic):
    """Each op is fed LiteRT's own input tensors, so a difference is pinned on the op that makes it;
    then the whole model runs end to end on the same 300 test images."""
    reference = litert_reference(converted[name])
    batch = model_inputs(reference, digits.x_test[:300])
    expected = run(reference, batch)
    engine = numpy_engine.Interpreter(model_path=str(converted[name]), arithmetic=arithmetic)
    assert engine.arithmetic == arithmetic
    engine.resize_tensor_input(engine.get_input_details()[0]["index"], batch.shape)
    engine.allocate_tensors()
    checked = set()
    for kernel, shapes in zip(engine.kernels, engine.output_shapes):
        operator = kernel.operator
        inputs = [reference.get_tensor(index) if index >= 0 else None for index in operator.inputs]
        for index, output in zip(operator.outputs, kernel.run(inputs, shapes)):
            want = reference.get_tensor(index)
            assert output.dtype == want.dtype and output.shape == want.shape, operator.name
            differ = np.count_nonzero(output != want)
            assert differ == 0, f"{operator.name} (operator {operator.index}): {differ} of {want.size} values differ"
        checked.add(operator.name)
    assert np.array_equal(run(engine, batch), expected)
    assert len(checked) >= 5


def test_the_test_models_cover_every_op_the_engine_implements(converted):
    from ai_edge_litert import interpreter as litert

    seen = set()
    for path in converted.values():
        reference = litert.Interpreter(model_path=str(path))
        seen |= {op["op_name"] for op in reference._get_ops_details()}
    expected = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "RESHAPE",
                "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE", "DEQUANTIZE", "ADD", "PAD", "SPACE_TO_BATCH_ND",
                "BATCH_TO_SPACE_ND", "RELU"}
    assert expected <= seen, expected - seen


def test_an_unsupported_op_is_refused_at_load_in_one_line_naming_it(converted):
    with pytest.raises(errors.ModelFileError) as caught:
        numpy_engine.Interpreter(model_path=str(converted["with_tanh"]))
    message = str(caught.value)
    assert message.startswith(f"{converted['with_tanh']}: the numpy engine cannot run this model: operator")
    assert "TANH" in message and "\n" not in message


def test_a_float_model_is_refused_at_load_in_one_line(fixture_bundle):
    path = fixture_bundle / "model_f32.tflite"
    with pytest.raises(errors.ModelFileError, match="this is a float model") as caught:
        numpy_engine.Interpreter(model_path=str(path))
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_truncated_and_corrupted_files_give_one_line_errors(fixture_bundle, tmp_path):
    content = (fixture_bundle / "model_int8.tflite").read_bytes()
    path = tmp_path / "model.tflite"
    for cut in (12, 100, 5000, len(content) // 2, len(content) - 1):
        path.write_bytes(content[:cut])
        with pytest.raises(errors.ModelFileError, match=f"{path}: corrupt or unsupported TFLite model") as caught:
            numpy_engine.Interpreter(model_path=str(path))
        assert "\n" not in str(caught.value)
    # Random damage anywhere in the file: a clean load or a ModelFileError, never another exception.
    generator = np.random.default_rng(1)
    for _ in range(300):
        damaged = bytearray(content)
        for position in generator.integers(0, len(content), size=4):
            damaged[position] = generator.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            engine = numpy_engine.Interpreter(model_path=str(path))
            engine.allocate_tensors()
        except errors.ModelFileError as error:
            assert "\n" not in str(error)
        except ValueError as error:  # allocate_tensors: shapes that do not fit, as LiteRT reports them
            assert str(error).startswith("cannot allocate tensors")


def test_the_interface_is_litert_s(fixture_bundle, digits):
    from ai_edge_litert import interpreter as litert

    path = str(fixture_bundle / "model_int8.tflite")
    engine, reference = numpy_engine.Interpreter(model_path=path, num_threads=1), litert.Interpreter(model_path=path)
    for ours, theirs in ((engine.get_input_details()[0], reference.get_input_details()[0]),
                         (engine.get_output_details()[0], reference.get_output_details()[0])):
        for key in ("name", "index", "dtype", "quantization"):
            assert ours[key] == theirs[key], key
        assert ours["shape"].dtype == np.int32 and np.array_equal(ours["shape"], theirs["shape"])
    engine.allocate_tensors()
    with pytest.raises(ValueError, match="expected type INT8"):
        engine.set_tensor(engine.get_input_details()[0]["index"], np.zeros((1, 28, 28, 1), np.float32))


def test_the_numpy_backend_is_last_and_names_itself(fixture_bundle, digits):
    assert list(backends.TFLITE_INTERPRETERS)[-1] == "numpy"
    model = classifier.Classifier.load(fixture_bundle / "model_int8.tflite", backend="numpy")
    assert model.describe()["backend"] == "numpy"
    # Through the classifier (quantizing, odd batch size) still equal to LiteRT's reference kernels
    # (its default kernels round differently on a few values, as docs/DESIGN notes).
    reference = litert_reference(fixture_bundle / "model_int8.tflite")
    raw = model.predict(digits.x_test[:37], batch_size=16).raw
    assert np.array_equal(raw, run(reference, model_inputs(reference, digits.x_test[:37])))


# --- choosing the arithmetic ---

def write_elf_header(path, flags):
    header = bytearray(52)
    header[:6] = b"\x7fELF\x01\x01"  # 32-bit, little-endian
    header[36:40] = flags.to_bytes(4, "little")
    path.write_bytes(bytes(header))


@pytest.mark.parametrize(("machine", "flags", "triplet", "soft"), [
    ("x86_64", 0x200, "x86_64-linux-gnu", False),
    ("aarch64", 0, "aarch64-linux-gnu", False),
    ("armv6l", 0x05000200, "arm-linux-gnueabihf", True),  # the ELF header wins over the triplet
    ("armv7l", 0x05000400, "arm-linux-gnueabi", False),
    ("armv5tel", 0x05000000, "arm-linux-gnueabi", True),  # no float flag: Debian armel's triplet
    ("armv7l", 0x05000000, "arm-linux-gnueabihf", False),
])
def test_soft_float_is_detected_from_the_interpreter_binary_then_the_triplet(monkeypatch, tmp_path, machine, flags,
                                                                            triplet, soft):
    write_elf_header(tmp_path / "python3", flags)
    monkeypatch.setattr(numpy_engine.platform, "machine", lambda: machine)
    monkeypatch.setattr(numpy_engine.sys, "executable", str(tmp_path / "python3"))
    import sysconfig  # imported by the engine only when it gets there

    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: triplet)
    assert numpy_engine.soft_float_abi() is soft
    monkeypatch.delenv(numpy_engine.ARITHMETIC_ENVIRONMENT_VARIABLE, raising=False)
    assert numpy_engine.choose_arithmetic() == ("integer" if soft else "float")


def test_the_arithmetic_can_be_forced(monkeypatch):
    monkeypatch.setenv(numpy_engine.ARITHMETIC_ENVIRONMENT_VARIABLE, "integer")
    assert numpy_engine.choose_arithmetic() == "integer"
    assert numpy_engine.choose_arithmetic("float") == "float"
    with pytest.raises(ValueError, match="arithmetic must be one of float, integer"):
        numpy_engine.choose_arithmetic("fixed")


@pytest.mark.slow
@pytest.mark.parametrize("arithmetic", ARITHMETICS)
def test_all_10000_test_images_are_bit_exact_with_litert_reference_kernels(trained, mnist, arithmetic):
    path = trained / "model_int8.tflite"
    reference = litert_reference(path)
    engine = numpy_engine.Interpreter(model_path=str(path), arithmetic=arithmetic)
    batch = model_inputs(reference, mnist.x_test)
    expected = np.concatenate([run(reference, batch[start:start + 2000]) for start in range(0, len(batch), 2000)])
    got = np.concatenate([run(engine, batch[start:start + 256]) for start in range(0, len(batch), 256)])
    assert got.shape == (10000, 10)
    assert np.count_nonzero(got != expected) == 0


def test_an_int8_model_loads_without_the_16x8_and_float_kernels(fixture_bundle):
    """A Pi Zero pays the numpy engine's imports on every `predict`: a plain int8 model needs neither
    the 16x8 nor the float kernels (nor sysconfig, read only on 32-bit ARM), so they are not imported."""
    from tests.conftest import run_cli

    program = ("import sys\nfrom edge_runtime.engine.interpreter import Interpreter\n"
               "engine = Interpreter(model_path=sys.argv[1])\nengine.allocate_tensors()\n"
               "print(sorted(name for name in ('edge_runtime.engine.kernels_16x8', 'edge_runtime.engine.float_kernels')"
               " if name in sys.modules))\n")
    result = run_cli("-c", program, str(fixture_bundle / "model_int8.tflite"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
