"""The prediction record: the keys predict --json and /api/predict share, and the one top-k rule."""

import numpy as np
import pytest

from edge_runtime import classifier, errors, records


def predictions(probabilities, class_names):
    probabilities = np.asarray(probabilities, dtype=np.float32)
    return classifier.Predictions(probabilities.argmax(axis=1), probabilities, class_names=class_names)


def test_records_list_the_best_classes_in_order_with_their_names():
    made = records.records(predictions([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], ("cat", "dog", "bird")), ["a.png", "b.png"], 2)
    assert [record.as_dict() for record in made] == [
        {"name": "a.png", "label": 1, "class_name": "dog", "probability": pytest.approx(0.7),
         "top_k": [{"label": 1, "class_name": "dog", "probability": pytest.approx(0.7)},
                   {"label": 2, "class_name": "bird", "probability": pytest.approx(0.2)}]},
        {"name": "b.png", "label": 0, "class_name": "cat", "probability": pytest.approx(0.5),
         "top_k": [{"label": 0, "class_name": "cat", "probability": pytest.approx(0.5)},
                   {"label": 2, "class_name": "bird", "probability": pytest.approx(0.3)}]},
    ]


def test_a_top_k_beyond_the_classes_lists_them_all_and_ties_keep_class_order():
    (record,) = records.records(predictions([[0.25, 0.25, 0.5]], ("0", "1", "2")), ["x"], 11)
    assert [label for label, _, _ in record.top_k] == [2, 0, 1]


@pytest.mark.parametrize("value, message", [
    (0, "top_k must be a whole number of 1 or more, got 0"),
    ("-2", "top_k must be a whole number of 1 or more, got -2"),
    ("three", "top_k must be a whole number of 1 or more, got 'three'"),
])
def test_a_bad_top_k_is_refused_in_one_line(value, message):
    with pytest.raises(errors.InputError) as refused:
        records.check_top_k(value)
    assert str(refused.value) == message


@pytest.mark.parametrize("name, label, text", [("0", 0, "0"), ("7", 7, "7"), ("Trouser", 1, "Trouser (1)"),
                                               ("3", 4, "3 (4)")])
def test_a_class_is_written_once_when_its_name_is_its_index(name, label, text):
    assert records.class_text(name, label) == text
