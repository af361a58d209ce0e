"""Label-free drift (edge_runtime.drift): bins and distance against a plain reference computation, the
window, the manifest's histogram fields and their refusals, and the export's counts."""

import copy
import fractions

import numpy as np
import pytest

from edge_runtime import drift, manifest
from test_manifest import valid_document

EDGES = drift.DEFAULT_EDGES


def reference_bin(probability, edges):
    """The bin of one top-1 probability, the slow obvious way: the last edge at or below it."""
    return min(max(index for index, edge in enumerate(edges) if edge <= probability), len(edges) - 2)


def test_bins_match_a_plain_computation_at_and_between_edges():
    values = [0.1, 0.5, 0.4999, 0.7, 0.95, 0.98, 0.99, 0.9961, 1.0, *np.linspace(0.1, 1.0, 37)]
    probabilities = np.array([[value, 1.0 - value] for value in values])
    expected = [reference_bin(max(value, 1.0 - value), EDGES) for value in values]
    assert drift.bin_indices(probabilities, EDGES) == expected
    assert drift.top1_counts(probabilities, EDGES) == np.bincount(expected, minlength=len(EDGES) - 1).tolist()


def test_total_variation_is_half_the_l1_distance_of_the_shares():
    live, reference = [3, 0, 1, 6], [10, 5, 5, 80]
    exact = sum(abs(fractions.Fraction(a, 10) - fractions.Fraction(b, 100)) for a, b in zip(live, reference)) / 2
    assert drift.total_variation(live, reference) == pytest.approx(float(exact), abs=1e-15)
    assert drift.total_variation(reference, reference) == 0.0
    assert drift.total_variation([1, 0], [0, 1]) == 1.0
    with pytest.raises(ValueError, match="2 and 3 bins"):
        drift.total_variation([1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        drift.total_variation([0, 0], [1, 1])


def test_the_window_keeps_the_latest_images_and_the_verdict_waits_for_the_minimum_count():
    histogram = drift.LiveHistogram((0.0, 0.8, 1.0), [10, 90], window=4, threshold=0.3, min_images=3)
    confident, unsure = np.array([[0.9, 0.1]]), np.array([[0.55, 0.45]])
    histogram.add(np.concatenate([unsure, unsure]))
    figures = histogram.snapshot()
    assert figures["distance"] == pytest.approx(0.9) and not figures["drifted"] and not figures["enough_images"]
    histogram.add(unsure)
    assert histogram.snapshot()["drifted"]
    histogram.add(np.concatenate([confident] * 4))  # the unsure ones leave the window
    figures = histogram.snapshot()
    assert figures["window_counts"] == [0, 4] and figures["images"] == 4 and figures["seen"] == 7
    assert figures["distance"] == pytest.approx(0.1) and not figures["drifted"]


def test_bad_edges_and_settings_are_refused():
    for edges in ((0.0, 1.0), (0.1, 0.5, 1.0), (0.0, 0.5, 0.5, 1.0), (0.0, 0.5, 0.9)):
        with pytest.raises(ValueError, match="rise strictly from 0 to 1"):
            drift.check_edges(edges)
    with pytest.raises(ValueError, match="minimum count must be 1..window"):
        drift.LiveHistogram((0.0, 0.5, 1.0), [1, 1], window=10, threshold=0.1, min_images=11)
    with pytest.raises(ValueError, match="do not fit 2 bins"):
        drift.LiveHistogram((0.0, 0.5, 1.0), [1, 1, 1], window=10, threshold=0.1, min_images=5)


def with_histogram(counts=(0, 0, 100, 400), edges=(0.0, 0.5, 0.9, 0.99, 1.0)):
    document = valid_document()
    document["top1_histogram"] = {"edges": list(edges), "statistic": drift.STATISTIC}
    document["files"]["model_int8.tflite"]["top1_counts"] = list(counts)
    return document


def test_the_manifest_gives_the_edges_and_each_models_counts():
    parsed = manifest.Manifest.parse(with_histogram())
    assert parsed.top1_edges == (0.0, 0.5, 0.9, 0.99, 1.0)
    assert parsed.files["model_int8.tflite"].top1_counts == (0, 0, 100, 400)
    assert parsed.files["model_f32.tflite"].top1_counts is None
    old = manifest.Manifest.parse(valid_document())  # exported before label-free drift: still read
    assert old.top1_edges is None and old.files["model_int8.tflite"].top1_counts is None


@pytest.mark.parametrize("change, message", [
    (lambda d: d["files"]["model_int8.tflite"].update(top1_counts=[1, 2, 497]),
     "field 'files.model_int8.tflite.top1_counts' has 3 counts for the 4 bins of 'top1_histogram.edges'"),
    (lambda d: d["files"]["model_int8.tflite"].update(top1_counts=[0, 0, 100, 399]),
     "field 'files.model_int8.tflite.top1_counts' adds up to 499, not the test set's 500 images"),
    (lambda d: d["files"]["model_int8.tflite"].update(top1_counts=[0, 0, 100.0, 400]),
     "field 'files.model_int8.tflite.top1_counts' must be a list of non-negative integers"),
    (lambda d: d["top1_histogram"].update(edges=[0.0, 0.9, 0.5, 1.0]),
     "field 'top1_histogram.edges' must be numbers rising strictly from 0 to 1"),
    (lambda d: d.pop("top1_histogram"), "files have 'top1_counts' but field 'top1_histogram' is missing"),
])
def test_a_bad_histogram_is_refused_naming_the_field(change, message):
    document = copy.deepcopy(with_histogram())
    change(document)
    with pytest.raises(manifest.ManifestFormatError, match=message.replace(".", r"\.").replace("(", r"\(")):
        manifest.Manifest.parse(document, source="m.json")


def test_the_export_records_each_models_counts_over_its_whole_test_set(fixture_bundle):
    """A real export (the checked-in fixture bundle; tests/test_fixture.py checks the export still makes
    it): every model's counts add up to the test set, and the int8 TFLite model's are its own
    probabilities binned again here."""
    from edge_runtime import Classifier

    parsed = manifest.read_manifest(fixture_bundle / "manifest.json")
    assert parsed.top1_edges == EDGES
    images = parsed.files["test_set.npz"].images
    for name in parsed.files_with_role(manifest.ROLE_INT8_MODEL) + parsed.files_with_role(manifest.ROLE_FLOAT_REFERENCE):
        assert sum(parsed.files[name].top1_counts) == images, name
    with np.load(fixture_bundle / "test_set.npz") as archive:
        probabilities = Classifier.load(fixture_bundle / "model_int8.tflite").predict(archive["x_test"]).probabilities
    assert list(parsed.files["model_int8.tflite"].top1_counts) == drift.top1_counts(probabilities, EDGES)


def test_a_bundle_without_a_histogram_serves_with_drift_off():
    from edge_runtime.serve import live, metrics
    from test_serve_live import ServedWithoutReference, make_predictions

    checks = live.LiveChecks(ServedWithoutReference(), live.LiveSettings(), log=print)
    make_predictions(checks, 3)
    assert checks.snapshot()["drift"] is None
    counters = metrics.Metrics("model_int8.tflite", "ab", "litert", "cd")
    counters.watch_live(checks.snapshot)
    text = counters.exposition()[0].decode()
    assert "mnist_edge_drift" not in text and 'mnist_edge_manifest_info{manifest_sha256="cd"} 1.0' in text


@pytest.mark.parametrize("flags, message", [
    (["--drift-threshold", "1.5"], "argument --drift-threshold: must be a number from 0 to 1, got 1.5"),
    (["--drift-window", "100"], "--drift-min-images (200) cannot be more than --drift-window (100)"),
    (["--drift-window", "0", "--drift-min-images", "0"], "argument --drift-window: must be a positive integer, got 0"),
])
def test_serve_refuses_drift_options_out_of_range(flags, message, capsys):
    from edge_runtime.cli import main

    assert main.parse_arguments(["serve", "bundle"]).drift_window == 500
    with pytest.raises(SystemExit) as refused:
        main.parse_arguments(["serve", "bundle", *flags])
    error = capsys.readouterr().err
    assert refused.value.code == 2 and len(error.splitlines()) == 1  # a bad option, as for every command
    assert error.startswith("error: mnist-edge") and error.rstrip().endswith(message), error


def test_the_noise_quantile_matches_resampling_and_grows_for_a_spread_histogram():
    """Against drawing images one by one from the histogram (a plain simulation): the same 99.9% quantile."""
    reference = [44, 138, 111, 178, 233, 351, 487, 8458]  # the trained seed model's int8 counts
    generator = np.random.default_rng(5)
    pool = np.repeat(np.arange(len(reference)), reference)
    plain = [drift.total_variation(np.bincount(generator.choice(pool, 200), minlength=8), reference) for _ in range(10_000)]
    assert drift.noise_quantile(reference, 200) == pytest.approx(np.quantile(plain, 0.999), abs=0.012)
    assert drift.noise_quantile([1250] * 8, 200) > 0.14 > drift.noise_quantile(reference, 200)


class ServedWithHistogram:
    """What LiveChecks needs of a ServedModel whose manifest has the given top-1 histogram."""

    class_names = [str(digit) for digit in range(10)]
    reference = None
    reference_name = None

    def __init__(self, counts):
        self.top1_histogram = ((0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0), counts)


def test_serve_warns_at_start_when_its_threshold_is_within_the_noise_and_once_per_crossing():
    from edge_runtime.serve import live

    lines = []
    live.LiveChecks(ServedWithHistogram([1250] * 8), live.LiveSettings(), log=lines.append)
    assert lines[-1].startswith("warning: drift threshold 0.15 is within the sampling noise of this model's test-set "
                                "histogram: 200 ordinary images reach 0.1")
    lines.clear()
    settings = live.LiveSettings(drift_window=4, drift_min_images=2)
    checks = live.LiveChecks(ServedWithHistogram([0, 0, 0, 0, 0, 0, 10, 90]), settings, log=lines.append)
    assert lines[0].startswith("label-free drift: total variation against the test set's top-1 histogram over the "
                               "last 4 images, threshold 0.15 from 2 images")
    assert lines[1].startswith("warning: drift threshold 0.15 is within")  # two images are all noise
    lines[:] = lines[:1]
    confident, unsure = np.array([[0.996] + [0.0004] * 9]), np.array([[0.6, 0.4] + [0.0] * 8])
    for probabilities in (confident, unsure, unsure, unsure, confident, confident, confident, confident):
        checks.record_drift(probabilities)
    assert [line.split(" over")[0] for line in lines[1:]] == [
        "warning: top-1 probability drift 0.500", "top-1 probability drift 0.100"]
    assert checks.snapshot()["drift"]["drifted"] is False
