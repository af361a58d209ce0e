"""How accurate `predict` is on the handwriting set, against the reference preparation, per style.

Both preparations feed the same model, so their accuracies are compared image by image (exact
McNemar test and a paired interval, from edge_runtime.statistics), overall and for each style.
"""

import dataclasses
import pathlib

import numpy as np

from edge_runtime import errors, statistics
from edge_runtime.pictures import digit, preparation
from handwriting import generate, reference


@dataclasses.dataclass
class Result:
    """Labels and each preparation's predictions (-1 where it refused the file), per sample."""

    samples: list
    predict_labels: np.ndarray
    reference_labels: np.ndarray

    @property
    def truth(self):
        return np.array([sample.label for sample in self.samples])

    @property
    def styles(self):
        return np.array([sample.style for sample in self.samples])


def prepare_all(directory, samples, prepare, progress=None):
    """Run `prepare(path)` on every sample: (images (N, side, side) float32 in MNIST's frame, refused (N,) bool)."""
    side = digit.FRAME_SIDE
    prepared = np.zeros((len(samples), side, side), dtype=np.float32)
    refused = np.zeros(len(samples), dtype=bool)
    for index, sample in enumerate(samples):
        try:
            prepared[index] = prepare(directory / sample.file)
        except errors.InputError:
            refused[index] = True
        if progress:
            progress(index + 1)
    return prepared, refused


def predict_preparation(path):
    """Exactly what `predict FILE` feeds the model."""
    batch, _ = preparation.load_digits([path])
    return batch[0]


def evaluate(directory, model, progress=None):
    """Classify every sample of the set in `directory` with `model` (a Classifier), both ways."""
    directory = pathlib.Path(directory)
    samples = generate.read_labels(directory)
    labels = {}
    for name, prepare in (("predict", predict_preparation), ("reference", reference.prepare)):
        prepared, refused = prepare_all(directory, samples, prepare,
                                        progress=(lambda done, name=name: progress(name, done, len(samples)))
                                        if progress else None)
        predicted = model.predict(prepared).labels
        labels[name] = np.where(refused, -1, predicted)
    return Result(samples, labels["predict"], labels["reference"])


def summarize(result):
    """JSON-ready figures: overall and per style, predict vs the reference, paired."""
    truth, styles = result.truth, result.styles
    predict_right, reference_right = result.predict_labels == truth, result.reference_labels == truth
    rows = {"all": statistics.paired_comparison(reference_right, predict_right)}
    for style in dict.fromkeys(styles):
        chosen = styles == style
        rows[style] = statistics.paired_comparison(reference_right[chosen], predict_right[chosen])
    confusions = {}
    for label, predicted in zip(truth[~predict_right], result.predict_labels[~predict_right]):
        key = f"{label}→{predicted if predicted >= 0 else 'refused'}"
        confusions[key] = confusions.get(key, 0) + 1
    return {"rows": rows, "predict_confusions": dict(sorted(confusions.items(), key=lambda item: -item[1]))}


def format_table(summary):
    """A Markdown table: per style, the two accuracies and the paired comparison."""
    lines = ["| style | images | predict | reference | predict − reference (95% CI) | only predict right | "
             "only reference right | McNemar p |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for style, row in summary["rows"].items():
        lines.append(
            f"| {style} | {row['n']} | {100 * row['candidate_accuracy']:.1f}% | {100 * row['reference_accuracy']:.1f}% | "
            f"{row['difference_points']:+.1f} pt [{row['ci_low_points']:+.1f}, {row['ci_high_points']:+.1f}] | "
            f"{row['only_candidate_right']} | {row['only_reference_right']} | {row['p_value']:.2g} |"
        )
    worst = ", ".join(f"{key} ×{count}" for key, count in list(summary["predict_confusions"].items())[:8])
    lines.append("")
    lines.append(f"predict's most frequent mistakes (true→predicted): {worst or 'none'}")
    return "\n".join(lines)
