"""What a prediction says about one image: one record, the same keys in `predict --json` and `/api/predict`.

    {"name": "digit.png", "label": 7, "class_name": "7", "probability": 0.996,
     "top_k": [{"label": 7, "class_name": "7", "probability": 0.996}, ...]}

The top-k rule is here once too: `top_k` is a whole number of at least 1, and one larger than the
number of classes lists them all.
"""

from edge_runtime import errors

DEFAULT_TOP_K = 3


def check_top_k(value):
    """Return `value` (an int, or its text) as the top-k count; InputError unless a whole number >= 1."""
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise errors.InputError(f"top_k must be a whole number of 1 or more, got {str(value)[:20]!r}") from None
    if top_k < 1:
        raise errors.InputError(f"top_k must be a whole number of 1 or more, got {top_k}")
    return top_k


def class_text(class_name, label):
    """A class as people read it: its name, with its index in brackets only when the name is not that index."""
    return class_name if class_name == str(label) else f"{class_name} ({label})"


class Record:
    """One image's prediction: its name, the best class and its probability, and the best `top_k` classes."""

    __slots__ = ("name", "label", "class_name", "probability", "top_k")

    def __init__(self, name, label, class_name, probability, top_k):
        self.name, self.label, self.class_name, self.probability = name, label, class_name, probability
        self.top_k = top_k  # ((label, class_name, probability), ...), best first

    def as_dict(self):
        return {
            "name": self.name,
            "label": self.label,
            "class_name": self.class_name,
            "probability": self.probability,
            "top_k": [{"label": label, "class_name": class_name, "probability": probability}
                      for label, class_name, probability in self.top_k],
        }


def records(predictions, names, top_k=DEFAULT_TOP_K):
    """One Record per image of `predictions` (a classifier.Predictions), named by `names`, in order."""
    top_k = min(check_top_k(top_k), predictions.probabilities.shape[1])
    top_labels, top_probabilities = predictions.top_k(top_k)
    classes = predictions.class_names
    made = []
    for name, labels, probabilities in zip(names, top_labels.tolist(), top_probabilities.tolist()):
        best = tuple((label, classes[label], probability) for label, probability in zip(labels, probabilities))
        made.append(Record(name, best[0][0], best[0][1], best[0][2], best))
    return made
