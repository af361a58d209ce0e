"""The pictures of the report: confusion matrices, per-class accuracy, and the disputed test images."""

import numpy as np

from edge_runtime import atomic_files, statistics


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


def confusion_matrices(labels, named_predictions, class_names, path):
    """Side-by-side confusion matrices (rows: true class, columns: predicted), one per model."""
    plt = pyplot()
    count = len(class_names)
    side = max(4.8, 0.45 * count)
    figure, axes = plt.subplots(1, len(named_predictions), figsize=((side + 0.4) * len(named_predictions), side))
    for axis, (name, predictions) in zip(np.atleast_1d(axes), named_predictions):
        matrix = statistics.confusion_matrix(labels, predictions, count)
        # A log scale, or the diagonal (~1000 per cell) hides every mistake (a handful each).
        axis.imshow(np.log1p(matrix), cmap="Blues")
        for true_label in range(count):
            for predicted in range(count):
                cell = matrix[true_label, predicted]
                if cell:
                    axis.text(predicted, true_label, str(cell), ha="center", va="center", fontsize=7,
                              color="white" if true_label == predicted else "black")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(list(range(count)), class_names, rotation=90 if max(map(len, class_names)) > 2 else 0, fontsize=8)
        axis.set_yticks(list(range(count)), class_names, fontsize=8)
    save(figure, path)


def per_class_accuracy(labels, named_predictions, class_names, path):
    """Grouped bars of accuracy per class, one bar per model; the y axis starts near the lowest bar."""
    plt = pyplot()
    count = len(class_names)
    figure, axis = plt.subplots(figsize=(max(10, 0.8 * count), 4))
    width = 0.8 / len(named_predictions)
    lowest = 1.0
    for index, (name, predictions) in enumerate(named_predictions):
        accuracy = statistics.per_class_accuracy(labels, predictions, count)
        lowest = min(lowest, np.nanmin(accuracy))
        axis.bar(np.arange(count) + index * width, 100 * accuracy, width=width, label=name)
    axis.set_ylim(max(0.0, 100 * lowest - 2), 100.2)
    axis.set_xticks(np.arange(count) + width * (len(named_predictions) - 1) / 2, class_names,
                    rotation=30 if max(map(len, class_names)) > 2 else 0)
    axis.set_xlabel("class")
    axis.set_ylabel("accuracy, %")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(named_predictions), frameon=False)
    save(figure, path)


def disagreement_grid(images, disagreements, class_names, path, columns=8):
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
        axis.imshow(images[index], cmap="gray_r" if images.ndim == 3 or images.shape[-1] == 1 else None)
        axis.set_title(f"#{index} true {class_names[truth]}\nfloat {class_names[float_label]} · "
                       f"int8 {class_names[int8_label]}", fontsize=8)
    save(figure, path)
