"""The comparison report from runs whose outcomes are known: counts, intervals, the gate, the files."""

import json
import math

import numpy as np
import pytest

from compare import analysis, layer_errors, report, runs
from edge_runtime import statistics

IMAGES = 200
CLASSES = tuple(str(digit) for digit in range(10))


def one_hot(predicted):
    probabilities = np.zeros((len(predicted), 10), dtype=np.float32)
    probabilities[np.arange(len(predicted)), predicted] = 1.0
    return probabilities


def make_run(model, runtime, precision, predicted, raw=None):
    probabilities = one_hot(predicted)
    return runs.Run(model, runtime, precision, 1000, probabilities, probabilities if raw is None else raw)


@pytest.fixture
def outcome():
    """Float right on 190/200; int8 loses 4 of those and wins 1 back: 187/200."""
    labels = np.arange(IMAGES) % 10
    float_predicted = labels.copy()
    float_predicted[:10] = (labels[:10] + 1) % 10  # float wrong on images 0-9
    int8_predicted = float_predicted.copy()
    int8_predicted[10:14] = (labels[10:14] + 2) % 10  # only float right on 10-13
    int8_predicted[0] = labels[0]  # only int8 right on 0
    raw = np.tile(np.arange(10, dtype=np.int8), (IMAGES, 1))
    other_raw = raw.copy()
    other_raw[[5, 7], 3] += 1  # a second interpreter differs on two images, labels unchanged
    return labels, [
        make_run("model.keras", "keras", "float32", float_predicted),
        make_run("model_int8.tflite", "litert", "int8", int8_predicted, raw),
        make_run("model_int8.tflite", "tensorflow", "int8", int8_predicted, other_raw),
    ]


def test_rows_count_the_discordant_images_and_carry_the_exact_interval(outcome):
    labels, all_runs = outcome
    summary = analysis.summarize(all_runs, labels, CLASSES, tolerance_points=5.0)
    reference, int8 = summary["rows"][0], summary["rows"][1]
    assert reference["accuracy"] == 190 / 200 and reference["change_points"] == 0.0
    assert int8["accuracy"] == 187 / 200
    assert int8["change_points"] == pytest.approx(-1.5)
    assert (int8["only_float_right"], int8["only_this_right"]) == (4, 1)
    low, high = statistics.clopper_pearson(1, 5)
    assert int8["change_ci_points"] == pytest.approx([100 * 5 * (2 * low - 1) / 200, 100 * 5 * (2 * high - 1) / 200])
    assert int8["mcnemar_p_value"] == pytest.approx(0.375)  # 2 * P(X <= 1), X ~ Binomial(5, 1/2) = 2 * 6/32
    assert int8["agreement_with_float"] == pytest.approx(195 / 200)
    assert int8["max_probability_difference"] == 1.0
    assert summary["gate"] == {"passed": True, "failures": []}


def test_the_gate_fails_naming_the_model_and_the_drop(outcome):
    labels, all_runs = outcome
    summary = analysis.summarize(all_runs, labels, CLASSES, tolerance_points=1.0)
    assert not summary["gate"]["passed"]
    assert summary["gate"]["failures"][0] == (
        "model_int8.tflite (litert): accuracy 93.50% is 1.50 points below the float model's 95.00% (tolerance 1.00)")
    assert len(summary["gate"]["failures"]) == 2  # both runtimes of the int8 file


def test_identical_models_give_a_zero_interval_and_p_value_one(outcome):
    labels, all_runs = outcome
    twin = make_run("model_f32.tflite", "litert", "float32", all_runs[0].labels)
    row = analysis.summarize([all_runs[0], twin], labels, CLASSES, 0.5)["rows"][1]
    assert row["change_ci_points"] == [0.0, 0.0] and row["mcnemar_p_value"] == 1.0 and row["change_points"] == 0.0


def test_cross_runtime_consistency_counts_images_with_different_raw_outputs(outcome):
    labels, all_runs = outcome
    assert analysis.summarize(all_runs, labels, CLASSES, 0.5)["consistency"] == [{
        "model": "model_int8.tflite", "runtimes": ["litert", "tensorflow"],
        "images_with_different_outputs": 2, "images_with_different_labels": 0,
    }]


def test_disagreements_list_the_images_with_both_predictions(outcome):
    labels, all_runs = outcome
    found = analysis.summarize(all_runs, labels, CLASSES, 0.5)["disagreements"]
    assert found["count"] == 5 and found["indices"] == [0, 10, 11, 12, 13]
    assert found["float_labels"][0] == 1 and found["int8_labels"][0] == 0 and found["true_labels"][0] == 0


def table_rows(markdown, header_start):
    lines = markdown.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(header_start))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_report_files_are_whole_tables_and_valid_json(outcome, tmp_path):
    labels, all_runs = outcome
    all_runs[1].latency_p50_ms, all_runs[1].throughput_images_per_s, all_runs[1].peak_rss_mib = 0.02, 80000.0, 43.0
    summary = analysis.summarize(all_runs, labels, CLASSES, tolerance_points=1.0)
    text = report.write_report(summary, tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    table = table_rows(text, "| model | runtime |")
    assert len(table) == 2 + len(all_runs)
    assert all(len(cells(line)) == len(cells(table[0])) for line in table)
    assert cells(table[3])[:4] == ["model_int8.tflite", "litert", "1.0 KiB", "93.50%"]
    assert cells(table[3])[4].startswith("-1.50 pt [") and cells(table[3])[4].endswith("(4↓ 1↑)")
    assert cells(table[2])[-3:] == ["— ms", "—", "— MiB"]  # not measured: a dash, not a made-up number
    assert "FAILED — model_int8.tflite (litert)" in text
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][0]["latency_p50_ms"] is None  # NaN is written as null: strict JSON
    assert saved["rows"][1]["peak_rss_mib"] == 43.0


def test_an_empty_class_is_null_in_json_and_a_dash_in_markdown(tmp_path):
    labels = np.zeros(20, dtype=np.int64)  # only zeros: classes 1-9 have no images
    summary = analysis.summarize([make_run("model.keras", "keras", "float32", labels)], labels, CLASSES, 0.5)
    assert math.isnan(summary["rows"][0]["per_class_accuracy"][1])
    text = report.write_report(summary, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["rows"][0]["per_class_accuracy"][1] is None
    assert cells(table_rows(text, "| model | 0 (0) |")[2]) == ["model.keras", "100.0", *["—"] * 9]


def test_the_report_names_the_classes():
    labels = np.arange(20) % 3
    names = ("cat", "dog", "bird")
    run = runs.Run("model.keras", "keras", "float32", 1000, np.eye(3, dtype=np.float32)[labels], None)
    summary = analysis.summarize([run], labels, names, 0.5)
    assert summary["classes"] == ["cat", "dog", "bird"]
    assert cells(report.per_class_table(summary).splitlines()[0]) == ["model", "cat (0)", "dog (1)", "bird (2)"]


def test_layer_error_table_keeps_its_columns():
    rows = [{"op": "CONV_2D", "tensor": "model/conv2d/Relu;model/conv2d/BiasAdd", "rmse_over_scale": 0.4,
             "channel_error": 0.125, "mean_error": -0.001, "max_abs_error": 0.05, "scale": 0.01}]
    table = table_rows(layer_errors.markdown(rows), "| op |")
    assert all(len(cells(line)) == 6 for line in table)
    assert cells(table[2])[1:3] == ["`model/conv2d/Relu`", "0.125"]
