"""Write the comparison report: report.json for programs, report.md for people."""

import json
import math

from edge_runtime import atomic_files, manifest


def number(value, fmt):
    """Format `value`, or an em dash when it is missing or not a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def main_table(summary, speed=True):
    """The one-row-per-(model × runtime) Markdown table (without the speed columns when `speed` is false)."""
    header = "| model | runtime | size | accuracy | change vs float (95% CI) | McNemar p | agreement | max Δp |"
    rule = "|---|---|---:|---:|---|---:|---:|---:|"
    if speed:
        header, rule = header + " p50 batch 1 | images/s batch 256 | peak RSS |", rule + "---:|---:|---:|"
    lines = [header, rule]
    for index, row in enumerate(summary["rows"]):
        if index == 0:
            change = "reference"
        else:
            low, high = row["change_ci_points"]
            change = f"{row['change_points']:+.2f} pt [{low:+.2f}, {high:+.2f}] ({row['only_float_right']}↓ {row['only_this_right']}↑)"
        line = (
            f"| {row['model']} | {row['runtime']} | {row['size_bytes'] / 1024:,.1f} KiB | {100 * row['accuracy']:.2f}% "
            f"| {change} | {'—' if index == 0 else number(row['mcnemar_p_value'], '.3g')} "
            f"| {100 * row['agreement_with_float']:.2f}% | {number(row['max_probability_difference'], '.1e')} |"
        )
        if speed:
            line += (f" {number(row['latency_p50_ms'], '.3f')} ms | {number(row['throughput_images_per_s'], ',.0f')} "
                     f"| {number(row['peak_rss_mib'], '.0f')} MiB |")
        lines.append(line)
    return "\n".join(lines)


def per_class_table(summary):
    """Accuracy per class for the float model and each distinct quantized file (first runtime)."""
    seen, rows = set(), []
    for row in summary["rows"]:
        if row["precision"] == "float32" and row is not summary["rows"][0]:
            continue
        if row["model"] in seen:
            continue
        seen.add(row["model"])
        rows.append(row)
    names = summary["classes"]
    lines = ["| model | " + " | ".join(f"{name} ({index})" for index, name in enumerate(names)) + " |",
             "|---|" + "---:|" * len(names)]
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(number(100 * value, ".1f") for value in row["per_class_accuracy"]) + " |")
    return "\n".join(lines)


def consistency_lines(summary):
    if not summary["consistency"]:
        return "Only one runtime is installed for each model: nothing to cross-check."
    lines = ["| model | runtimes | images with different raw outputs | images with different labels |", "|---|---|---:|---:|"]
    for finding in summary["consistency"]:
        lines.append(f"| {finding['model']} | {' vs '.join(finding['runtimes'])} | "
                     f"{finding['images_with_different_outputs']} | {finding['images_with_different_labels']} |")
    return "\n".join(lines)


def without_nan(value):
    """Replace NaN floats (a measurement that could not be made) with None, recursively, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def second_test_set_section(summary):
    """The report's section for the second test set (e.g. samples collected on the device)."""
    gate = summary["gate"]
    return "\n\n".join([
        f"## Second test set: {summary['file']} ({summary['images']:,} images)",
        "The same models on images collected on the device (`mnist-edge samples --out`, their x_test): "
        "what the int8 model meets in use rather than MNIST. Same columns as above; with few images the "
        "intervals are wide, and the gate holds here too.",
        main_table(summary, speed=False),
        "**Gate on this set:** " + ("passed." if gate["passed"] else "FAILED — " + "; ".join(gate["failures"])),
    ])


def what_it_is(record):
    """One plain sentence on what the export's recovery ladder chose for one file."""
    return f"{manifest.describe_precision(record['precision'], record['float_layers'])}, chosen at step {record['chosen']}"


def recovery_section(recovery):
    """The ladder each quantized file climbed at export (manifest `recovery`), as tables."""
    validation = recovery["validation"]
    lines = [
        "## How each quantized model was chosen (the export's recovery ladder)",
        f"Chosen on {validation['images']:,} validation images ({validation['drawn_from']}; the float model "
        f"scores {100 * validation['float_accuracy']:.2f}% there), never on the test set: a step passes when the "
        "upper end of the exact 95% paired interval on its drop is within the tolerance. The test column is "
        "for the record; it decided nothing.",
    ]
    for name, record in recovery["models"].items():
        lines += ["", f"**{name}**: {what_it_is(record)}.", "",
                  "| step | precision | calibration images | layers in float | validation | drop (95% interval) "
                  "| test | passed |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for step in record["steps"]:
            low, high = step["validation"]["drop_interval_points"]
            test = step.get("test", {}).get("accuracy")
            lines.append(
                f"| {step['step']} | {step['precision']} | {step['calibration_images']} | {len(step['float_layers'])} "
                f"| {100 * step['validation']['accuracy']:.2f}% | {step['validation']['drop_points']:+.2f} "
                f"[{low:+.2f}, {high:+.2f}] | {'-' if test is None else f'{100 * test:.2f}%'} "
                f"| {'yes' if step['passed'] else 'no'} |")
    return "\n".join(lines)


def write_report(summary, directory, extra_sections=()):
    """Write report.json and report.md into `directory`; return the Markdown text."""
    gate = summary["gate"]
    disagreements = summary["disagreements"]
    sections = [
        "# Float vs quantized: what int8 cost",
        f"All models on the same {summary['images']:,} test images, through the device's own preprocessing "
        f"(edge_runtime), one thread. Change vs float is in accuracy points against the Keras model, with an "
        f"exact paired 95% interval ({summary['method']}); ↓/↑ count the images only the float model / only this "
        f"model got right. Agreement is top-1 agreement with Keras; max Δp the largest probability difference.",
        main_table(summary),
        f"**Gate** (int8 may lose at most {summary['tolerance_points']:.2f} points): "
        + ("passed." if gate["passed"] else "FAILED — " + "; ".join(gate["failures"])),
        "## Same file, different interpreters",
        consistency_lines(summary),
        "## Accuracy per class (%)",
        per_class_table(summary),
        "![per-class accuracy](per_class_accuracy.png)",
        "![confusion matrices](confusion_matrices.png)",
        f"## Where float and int8 disagree ({disagreements.get('count', 0)} images, {disagreements.get('model')})",
        "![disagreements](disagreements.png)",
        "## Training",
        "![training curves](training_curves.png)",
        *extra_sections,
    ]
    text = "\n\n".join(sections) + "\n"
    atomic_files.write_text_atomically(directory / "report.md", text)
    atomic_files.write_text_atomically(directory / "report.json", json.dumps(without_nan(summary), indent=2, allow_nan=False) + "\n")
    return text
