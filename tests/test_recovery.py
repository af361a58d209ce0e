"""The recovery ladder: its pass rule, its validation split, the manifest's record, and the numpy engine on
what it picks (16x8, int8 with layers in float), against LiteRT's reference kernels."""

import hashlib
import json

import numpy as np
import pytest

from edge_runtime import errors, evaluation, manifest, statistics
from export import recovery
from tests import outlier_models
from tests.conftest import run_cli


def comparison(only_float_right, only_candidate_right, both_right=4000, both_wrong=100):
    return statistics.paired_comparison_from_counts(both_right, only_float_right, only_candidate_right, both_wrong)


def test_the_interval_rule_refuses_a_drop_whose_point_estimate_is_within_the_tolerance():
    # 22 − 2 = 20 of 4,122 images: a 0.49-point drop, under 0.5, but the interval reaches past it.
    figures = comparison(22, 2, both_right=4000, both_wrong=98)
    assert 0.45 < -figures["difference_points"] < 0.5
    assert evaluation.accuracy_drop_failure("m", figures["candidate_accuracy"], figures["reference_accuracy"], 0.5) is None
    low, high = evaluation.drop_interval(figures)
    assert low < -figures["difference_points"] < high and high > 0.5
    message = evaluation.interval_drop_failure("model_int8.tflite", figures, 0.5)
    assert message.startswith("model_int8.tflite: accuracy ") and f"up to {high:.2f}" in message


def test_the_interval_rule_passes_a_model_that_agrees_with_float():
    figures = comparison(3, 4)
    assert evaluation.interval_drop_failure("m", figures, 0.5) is None
    low, high = evaluation.drop_interval(figures)
    assert low < 0 < high < 0.5


def test_the_validation_split_is_stratified_seeded_and_held_apart():
    labels = np.repeat(np.arange(10), 600)
    pool = np.arange(3000, 6000)
    exclude = np.arange(3000, 3100)
    chosen = recovery.validation_split(labels, 1000, 1, pool, exclude)
    assert len(chosen) == len(set(chosen)) == 1000
    assert set(chosen) <= set(range(3100, 6000))
    counts = np.bincount(labels[chosen], minlength=10)
    assert counts[counts > 0].max() - counts[counts > 0].min() <= 1
    assert np.array_equal(chosen, recovery.validation_split(labels, 1000, 1, pool, exclude))
    assert not np.array_equal(chosen, recovery.validation_split(labels, 1000, 2, pool, exclude))
    assert sorted(recovery.validation_split(labels, 5000, 1, pool, exclude)) == list(range(3100, 6000))
    with pytest.raises(ValueError, match="no training images are left for the validation split"):
        recovery.validation_split(labels, 10, 1, exclude, exclude)


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="validation size must be at least 1"):
        recovery.RecoverySettings(validation_size=0)
    with pytest.raises(ValueError, match="max float layers must be >= 0"):
        recovery.RecoverySettings(max_float_layers=-1)


def recorded_manifest(untrained_export, **changes):
    document = json.loads((untrained_export / manifest.MANIFEST_NAME).read_text())
    document.update(changes)
    return document


@pytest.mark.slow  # needs a real export (TensorFlow)
def test_the_manifest_reads_a_recovery_record_and_the_new_precisions(untrained_export):
    document = recorded_manifest(untrained_export)
    assert set(document["recovery"]["models"]) == {"model_int8.tflite", "model_int8.onnx"}
    record = document["recovery"]["models"]["model_int8.tflite"]
    assert record["chosen"] == "int8" and record["precision"] == "int8" and record["float_layers"] == []
    step = record["steps"][0]
    assert step["step"] == "int8" and step["passed"] is True and len(step["validation"]["drop_interval_points"]) == 2
    document["files"]["model_int8.tflite"]["precision"] = "16x8"
    record.update(chosen="16x8", precision="16x8")
    parsed = manifest.Manifest.parse(document, source="m.json")
    assert parsed.files["model_int8.tflite"].precision == "16x8"
    assert parsed.recovery["models"]["model_int8.tflite"]["chosen"] == "16x8"
    record.update(chosen="bigger-model")
    with pytest.raises(errors.ModelFileError,
                       match=r"m.json: field 'recovery.models.model_int8.tflite.chosen' must be one of int8, calibration"):
        manifest.Manifest.parse(document, source="m.json")
    record.update(chosen="int8", steps=[{"step": "int8", "passed": "yes"}])
    with pytest.raises(errors.ModelFileError,
                       match=r"field 'recovery.models.model_int8.tflite.steps\[0\].passed' must be true or false"):
        manifest.Manifest.parse(document, source="m.json")


class FakeMaker:
    """Candidates named by what made them, so a fake judge can give each its figures."""

    format, suffix, precision_16 = "TFLite", ".tflite", "16x8"

    def int8(self, images):
        return f"int8-{len(images)}".encode()

    def with_float_layers(self, images, rows):
        return f"float-{len(rows)}".encode()

    def float_layer_names(self, rows):
        return tuple(row["tensor"] for row in rows)

    def sixteen_bit(self, images):
        return b"16x8"


class FakeJudge:
    """Gives each candidate the paired counts (only float right, only candidate right) of `drops`."""

    tolerance_points = 0.5

    def __init__(self, drops):
        self.drops, self.seen = drops, []

    def measure(self, candidate, suffix):
        self.seen.append(candidate.content.decode())
        only_float, only_candidate = self.drops[candidate.content.decode()]
        candidate.validation = candidate.test = comparison(only_float, only_candidate)
        candidate.failure = evaluation.interval_drop_failure("m", candidate.validation, self.tolerance_points)
        return candidate


RANKING = [{"op": "FULLY_CONNECTED", "tensor": "dense", "layer_index": 2},
           {"op": "CONV_2D", "tensor": "conv2", "layer_index": 1}]


def climb(drops, **settings):
    judge = FakeJudge(drops)
    chosen, record = recovery.run_ladder(FakeMaker(), lambda count: np.zeros((count, 1)), 300,
                                         recovery.RecoverySettings(**settings), judge, lambda images: RANKING)
    return chosen, record, judge.seen


BAD, GOOD = (90, 2), (3, 3)


def test_the_ladder_stops_at_plain_int8_when_it_passes():
    chosen, record, seen = climb({"int8-300": GOOD})
    assert (chosen.step, chosen.precision, seen) == ("int8", "int8", ["int8-300"])
    assert [step["step"] for step in record["steps"]] == ["int8"] and record["sensitivity"] == []


def test_the_ladder_climbs_in_order_of_cost_and_keeps_the_first_that_passes():
    chosen, record, seen = climb({"int8-300": BAD, "int8-2000": BAD, "float-1": BAD, "float-2": GOOD})
    assert seen == ["int8-300", "int8-2000", "float-1", "float-2"]
    assert (chosen.step, chosen.precision, chosen.float_layers) == ("float-fallback", "mixed", ("dense", "conv2"))
    assert [step["passed"] for step in record["steps"]] == [False, False, False, True]
    assert record["sensitivity"][0]["tensor"] == "dense"
    chosen, _, seen = climb({"int8-300": BAD, "int8-2000": BAD, "float-1": BAD, "16x8": GOOD}, max_float_layers=1)
    assert seen[-1] == "16x8" and (chosen.step, chosen.precision) == ("16x8", "16x8")


def test_without_recovery_the_ladder_keeps_plain_int8_even_when_it_loses():
    chosen, record, seen = climb({"int8-300": BAD}, enabled=False)
    assert (chosen.step, chosen.passed, seen) == ("int8", False, ["int8-300"])


def test_a_model_no_step_saves_fails_in_one_line_naming_the_best_candidate():
    drops = {"int8-300": BAD, "int8-2000": (60, 2), "float-1": (30, 4), "float-2": BAD, "16x8": BAD}
    with pytest.raises(recovery.RecoveryFailed) as failure:
        climb(drops)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("no quantized TFLite model is within 0.50 points of the float model: the best, "
                              "float-fallback (1 in float), drops 0.63 points")


# --- the numpy engine on what the ladder picks, op by op against LiteRT's reference kernels ---

def op_by_op(path, grey_images, arithmetic=None):
    """Feed each of the numpy engine's operators LiteRT's own inputs; return (op, kernel, LiteRT output, ours)."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is the reference")
    from edge_runtime.engine import interpreter as numpy_engine

    reference = litert.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                   experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    ours = numpy_engine.Interpreter(model_path=path, arithmetic=arithmetic)
    detail = reference.get_input_details()[0]
    batch = grey_images.astype(np.float32)[..., None] / 255
    if detail["dtype"] != np.float32:
        scale, zero_point = detail["quantization"]
        limits = np.iinfo(detail["dtype"])
        batch = np.clip(np.round(batch / scale) + zero_point, limits.min, limits.max).astype(detail["dtype"])
    for interpreter in (reference, ours):
        interpreter.resize_tensor_input(detail["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], batch)
    reference.invoke()
    ours.invoke()
    results = []
    for kernel, shapes in zip(ours.kernels, ours.output_shapes):
        if kernel.folds:
            continue
        inputs = [reference.get_tensor(index) if index >= 0 else None for index in kernel.operator.inputs]
        results.append((kernel.operator.name, type(kernel).__name__, reference.get_tensor(kernel.operator.outputs[0]),
                        kernel.run(inputs, shapes)[0]))
    output = reference.get_output_details()[0]["index"]
    return results, reference.get_tensor(output), ours.get_tensor(output)


@pytest.fixture(scope="module")
def recovered_small_models(tmp_path_factory, mnist):
    """The small seed-like test model (random weights) as 16x8 and with its dense layer kept in float."""
    keras = pytest.importorskip("keras", reason="converting test models needs TensorFlow/Keras (the workstation venv)")
    from export import sensitivity, to_tflite
    from tests import int8_test_models

    keras.utils.set_random_seed(7)
    model = int8_test_models.seed_like()
    calibration_images = int8_test_models.images_for((28, 28, 1), mnist.x_train[:200])
    directory = tmp_path_factory.mktemp("recovered")
    (directory / "16x8.tflite").write_bytes(to_tflite.convert_16x8(model, calibration_images))
    dense = next(row["tensor"] for row in sensitivity.rank_layers(model, calibration_images, calibration_images[:20])
                 if row["op"] == "FULLY_CONNECTED")
    mixed = to_tflite.quantize_calibrated(to_tflite.calibrate(model, calibration_images), [dense])
    (directory / "mixed.tflite").write_bytes(mixed)
    return directory


@pytest.mark.slow  # converts small models with TensorFlow first
@pytest.mark.parametrize("arithmetic", ["float", "integer"])
def test_the_numpy_engine_runs_16x8_bit_exactly_as_litert(recovered_small_models, mnist, arithmetic):
    results, theirs, ours = op_by_op(recovered_small_models / "16x8.tflite", mnist.x_test[:300], arithmetic)
    kernels = {kernel for _, kernel, _, _ in results}
    assert {"Conv2D16", "MaxPool16", "FullyConnected16", "Softmax16"} <= kernels
    for name, kernel, expected, got in results:
        assert got.dtype == expected.dtype == np.int16 or name == "RESHAPE", (name, kernel)
        assert np.array_equal(got, expected), f"{name} ({kernel}): {int((got != expected).sum())} values differ"
    assert theirs.dtype == np.int16 and np.array_equal(theirs, ours)


@pytest.mark.slow  # converts small models with TensorFlow first
def test_the_numpy_engine_runs_a_mixed_model_float_layers_within_1e_5(recovered_small_models, mnist):
    results, theirs, ours = op_by_op(recovered_small_models / "mixed.tflite", mnist.x_test[:300])
    floats = [(name, kernel) for name, kernel, expected, _ in results if expected.dtype == np.float32]
    assert ("FULLY_CONNECTED", "FullyConnectedFloat") in floats
    for name, kernel, expected, got in results:
        if expected.dtype == np.float32:
            # Relative to the tensor's size: the sums are taken in another order than LiteRT's.
            assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max())), (name, kernel)
        else:
            assert np.array_equal(got, expected), f"{name} ({kernel}): {int((got != expected).sum())} values differ"
    assert theirs.dtype == np.int8 and (theirs != ours).mean() < 0.01


# --- the outlier models of tests/outlier_models.py, exported through the ladder (slow) ---

OUTLIER_CASES = {
    # name: (how to build it from the trained seed model, export flags, the TFLite step expected)
    "conv1 channel 0 x 300": (lambda seed: outlier_models.activation_outlier(seed, 300), [], "16x8"),
    "conv1 channel 0 x 1000": (lambda seed: outlier_models.activation_outlier(seed, 1000), [], "16x8"),
    # onnxruntime needs all three layers in float for this one (see the report), TFLite only the dense one.
    "conv2 channel 0 / 100, dense x 100": (lambda seed: outlier_models.weight_outlier(seed, 100),
                                           ["--max-float-layers", "3"], "float-fallback"),
}


@pytest.fixture(scope="module", params=sorted(OUTLIER_CASES))
def outlier_export(request, trained, tmp_path_factory):
    """One outlier model built from the trained seed model, exported through `python -m export`."""
    import shutil

    import keras

    build, flags, expected = OUTLIER_CASES[request.param]
    directory = tmp_path_factory.mktemp("outlier")
    build(keras.models.load_model(trained / "model.keras")).save(directory / "model.keras")
    shutil.copy(trained / "history.json", directory / "history.json")  # which images training held out
    exported = run_cli("-m", "export", "--model", str(directory / "model.keras"), "--output-dir", str(directory),
                       *flags)
    assert exported.returncode == 0, exported.stderr[-2000:]
    return directory, expected, exported.stdout


@pytest.mark.slow
def test_each_outlier_model_ends_within_tolerance_by_the_interval_rule(outlier_export):
    directory, expected, printed = outlier_export
    document = manifest.read_manifest(directory / manifest.MANIFEST_NAME)
    tolerance = document.tolerance_points
    record = document.recovery["models"]["model_int8.tflite"]
    steps = record["steps"]
    assert steps[0]["step"] == "int8" and not steps[0]["passed"]
    assert record["chosen"] == steps[-1]["step"] == expected and steps[-1]["passed"]
    assert all(step["validation"]["drop_interval_points"][1] > tolerance for step in steps[:-1])
    assert steps[-1]["validation"]["drop_interval_points"][1] <= tolerance
    entry = document.files["model_int8.tflite"]
    assert entry.precision == record["precision"] == {"16x8": "16x8", "float-fallback": "mixed"}[expected]
    if expected == "float-fallback":
        assert len(record["float_layers"]) == 1 and entry.details["float_layers"] == record["float_layers"]
    assert 100 * (document.float_accuracy - entry.test_accuracy) <= tolerance
    assert document.recovery["models"]["model_int8.onnx"]["steps"][-1]["passed"]
    assert f"{record['chosen']} (" in printed


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["litert", "numpy"])
def test_eval_passes_on_each_outlier_export_with_litert_and_the_numpy_engine(outlier_export, backend):
    directory, _, _ = outlier_export
    result = run_cli("-m", "edge_runtime", "eval", str(directory / "model_int8.tflite"), "--backend", backend, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["passed"] and report["results"][0]["backend"] == backend
    assert report["results"][0]["drop_points"] <= report["tolerance_points"]


@pytest.mark.slow
def test_the_seed_model_still_exports_plain_int8_unchanged(trained, mnist):
    """The ladder stops at its first step for the seed model: the same int8 file as --no-recovery gives."""
    import keras

    from export import calibration, to_tflite

    document = manifest.read_manifest(trained / manifest.MANIFEST_NAME)
    for name in ("model_int8.tflite", "model_int8.onnx"):
        record = document.recovery["models"][name]
        assert record["chosen"] == "int8" and [step["step"] for step in record["steps"]] == ["int8"]
        assert document.files[name].precision == "int8"
    images = calibration.calibration_images(mnist.x_train, mnist.y_train, document.calibration["images"],
                                            document.calibration["seed"], document.input_shape)
    plain = to_tflite.convert_int8(keras.models.load_model(trained / "model.keras"), images)
    assert manifest.sha256_of(trained / "model_int8.tflite") == hashlib.sha256(plain).hexdigest()
