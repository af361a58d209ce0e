"""Turn runs into findings: accuracy change with its paired interval, agreement, consistency, the gate."""

import numpy as np

from edge_runtime import statistics
from edge_runtime import evaluation, manifest as manifest_module


def summarize(runs, labels, class_names, tolerance_points):
    """Return the report as a JSON-ready dict. `runs[0]` must be the Keras float reference.

    Each row compares one run with the Keras model on the same images: the change in accuracy
    with an exact paired 95% interval and McNemar's p-value, top-1 agreement, the largest
    probability difference, and speed and memory.
    """
    reference = runs[0]
    reference_correct = reference.labels == labels
    rows = []
    for run in runs:
        comparison = statistics.paired_comparison(reference_correct, run.labels == labels)
        rows.append({
            "model": run.model,
            "runtime": run.runtime,
            "precision": run.precision,
            "size_bytes": run.size_bytes,
            "accuracy": comparison["candidate_accuracy"],
            "change_points": comparison["difference_points"],
            "change_ci_points": [comparison["ci_low_points"], comparison["ci_high_points"]],
            "mcnemar_p_value": comparison["p_value"],
            "only_float_right": comparison["only_reference_right"],
            "only_this_right": comparison["only_candidate_right"],
            "agreement_with_float": float(np.mean(run.labels == reference.labels)),
            "max_probability_difference": float(np.abs(run.probabilities - reference.probabilities).max()),
            "latency_p50_ms": run.latency_p50_ms,
            "throughput_images_per_s": run.throughput_images_per_s,
            "peak_rss_mib": run.peak_rss_mib,
            "per_class_accuracy": statistics.per_class_accuracy(labels, run.labels, len(class_names)).tolist(),
        })
    failures = [
        failure for failure in (
            evaluation.accuracy_drop_failure(f"{row['model']} ({row['runtime']})", row["accuracy"], rows[0]["accuracy"],
                                             tolerance_points)
            for row in rows if row["precision"] in manifest_module.QUANTIZED_PRECISIONS
        ) if failure
    ]
    return {
        "images": int(len(labels)),
        "classes": list(class_names),
        "tolerance_points": tolerance_points,
        "method": statistics.paired_comparison(reference_correct, reference_correct)["method"],
        "rows": rows,
        "consistency": cross_runtime_consistency(runs),
        "disagreements": disagreements(runs, labels),
        "gate": {"passed": not failures, "failures": failures},
    }


def cross_runtime_consistency(runs):
    """For each model run by several runtimes: on how many images do their raw outputs differ?

    Compared on the raw outputs (int8 for int8 TFLite), so that any difference at all shows up;
    for float models a difference below 1e-6 is rounding, not disagreement.
    """
    by_model = {}
    for run in runs[1:]:
        by_model.setdefault(run.model, []).append(run)
    findings = []
    for model, group in by_model.items():
        first = group[0]
        for other in group[1:]:
            if np.issubdtype(first.raw_outputs.dtype, np.integer):
                differing = np.any(first.raw_outputs != other.raw_outputs, axis=1)
            else:
                differing = np.any(np.abs(first.raw_outputs - other.raw_outputs) > 1e-6, axis=1)
            findings.append({
                "model": model,
                "runtimes": [first.runtime, other.runtime],
                "images_with_different_outputs": int(differing.sum()),
                "images_with_different_labels": int(np.sum(first.labels != other.labels)),
            })
    return findings


def disagreements(runs, labels, limit=16):
    """The test images where the float model and the first int8 TFLite run disagree (indices first)."""
    reference = runs[0]
    quantized = next((run for run in runs if run.precision in manifest_module.QUANTIZED_PRECISIONS), None)
    if quantized is None:
        return {"model": None, "indices": []}
    indices = np.flatnonzero(reference.labels != quantized.labels)
    return {
        "model": quantized.name,
        "count": int(len(indices)),
        "indices": indices[:limit].tolist(),
        "true_labels": labels[indices[:limit]].tolist(),
        "float_labels": reference.labels[indices[:limit]].tolist(),
        "int8_labels": quantized.labels[indices[:limit]].tolist(),
    }
