"""The pictures of the report: confusion matrices, per-class accuracy, and the disputed digits."""

import numpy as np

from compare import statistics
from edge_runtime import atomic_files


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on a build machine)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save(figure, path):
    with atomic_files.atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, bbox_inches="tight")
    pyplot().close(figure)


def confusion_matrices(labels, named_predictions, path):
    """Side-by-side confusion matrices (rows: true digit, columns: predicted), one per model."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(named_predictions), figsize=(5.2 * len(named_predictions), 4.8))
    for axis, (name, predictions) in zip(np.atleast_1d(axes), named_predictions):
        matrix = statistics.confusion_matrix(labels, predictions)
        # A log scale, or the diagonal (~1000 per cell) hides every mistake (a handful each).
        axis.imshow(np.log1p(matrix), cmap="Blues")
        for true_label in range(10):
            for predicted in range(10):
                count = matrix[true_label, predicted]
                if count:
                    axis.text(predicted, true_label, str(count), ha="center", va="center", fontsize=7,
                              color="white" if true_label == predicted else "black")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(range(10))
        axis.set_yticks(range(10))
    save(figure, path)


def per_class_accuracy(labels, named_predictions, path):
    """Grouped bars of accuracy per digit, one bar per model; the y axis starts near the lowest bar."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(named_predictions)
    lowest = 1.0
    for index, (name, predictions) in enumerate(named_predictions):
        accuracy = statistics.per_class_accuracy(labels, predictions)
        lowest = min(lowest, np.nanmin(accuracy))
        axis.bar(np.arange(10) + index * width, 100 * accuracy, width=width, label=name)
    axis.set_ylim(max(0.0, 100 * lowest - 2), 100.2)
    axis.set_xticks(np.arange(10) + width * (len(named_predictions) - 1) / 2, [str(digit) for digit in range(10)])
    axis.set_xlabel("digit")
    axis.set_ylabel("accuracy, %")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(named_predictions), frameon=False)
    save(figure, path)


def disagreement_grid(images, disagreements, path, columns=8):
    """The first test images where float and int8 disagree, titled with truth and both predictions."""
    plt = pyplot()
    indices = disagreements["indices"]
    if not indices:
        figure, axis = plt.subplots(figsize=(6, 1))
        axis.axis("off")
        axis.text(0.5, 0.5, "float and int8 agree on every test image", ha="center", va="center")
        save(figure, path)
        return
    rows = (len(indices) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index, truth, float_label, int8_label in zip(
        axes.flat, indices, disagreements["true_labels"], disagreements["float_labels"], disagreements["int8_labels"]
    ):
        axis.imshow(images[index], cmap="gray_r")
        axis.set_title(f"#{index} true {truth}\nfloat {float_label} · int8 {int8_label}", fontsize=8)
    save(figure, path)
