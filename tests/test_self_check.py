"""The bundle check eval and serve share: which float figure a model is judged against, and the verdict's lines."""

import pathlib
import types

import numpy as np

from edge_runtime import classifier, manifest, self_check

SHA = "ab" * 32
TRUTH = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def document(float_accuracy=0.9, reference_accuracy=0.9, tolerance=0.5):
    return manifest.Manifest.parse({
        "format_version": manifest.FORMAT_VERSION,
        "source_model": {"file": "model.keras", "test_accuracy": float_accuracy},
        "input": {"shape": [4, 4, 1], "layout": "NHWC", "scaling": "uint8 / 255"},
        "classes": ["a", "b", "c"], "class_names_source": "labels.txt",
        "preparation": {"name": "plain", "polarity": "as-is"}, "data": {"source": "test"},
        "calibration": {"images": 10, "seed": 0},
        "tolerances": {"int8_max_accuracy_drop_points": tolerance, "float_min_agreement": 0.999},
        "files": {
            "model_int8.tflite": {"role": "int8-model", "sha256": SHA, "bytes": 1, "precision": "int8",
                                  "test_accuracy": 0.8},
            "model_f32.tflite": {"role": "float-reference", "sha256": SHA, "bytes": 1, "precision": "float32",
                                 "test_accuracy": reference_accuracy},
            "test_set.npz": {"role": "test-set", "sha256": SHA, "bytes": 1, "images": len(TRUTH)},
        },
    }, source="manifest.json")


class Answering:
    """A stand-in classifier whose answer for image i is labels[i] (the images are their indices)."""

    def __init__(self, name, labels):
        self.path = pathlib.Path(name)
        self.backend = types.SimpleNamespace(name="fake")
        self.labels = np.asarray(labels)

    def predict(self, images, progress=None):
        chosen = self.labels[np.asarray(images)]
        return classifier.Predictions(chosen, np.eye(3, dtype=np.float32)[chosen])


def test_on_the_whole_set_the_model_is_judged_against_the_figure_recorded_at_export():
    int8 = Answering("model_int8.tflite", [0, 1, 2, 0, 1, 2, 0, 1, 0, 0])  # 9 of 10 right
    reference = Answering("model_f32.tflite", [0, 1, 2, 0, 1, 2, 0, 1, 2, 1])  # 9 of 10 right
    test = self_check.CheckImages(np.arange(10), TRUTH, whole=True)
    verdict = self_check.check([int8], reference, test, document(float_accuracy=0.9, reference_accuracy=0.9))
    (result,) = verdict.results
    assert (result.accuracy, result.float_accuracy, result.agreement_with_float) == (0.9, 0.9, 0.8)
    assert verdict.float_accuracy_source == "recorded at export on the whole test set"
    assert verdict.passed and verdict.summary()["drop_points"] == 0.0


def test_an_edited_float_figure_fails_the_whole_set_check_with_eval_s_lines():
    int8 = Answering("model_int8.tflite", TRUTH)
    reference = Answering("model_f32.tflite", TRUTH)
    test = self_check.CheckImages(np.arange(10), TRUTH, whole=True)
    verdict = self_check.check([int8], reference, test, document(float_accuracy=1.0, reference_accuracy=0.9))
    assert verdict.failures == (
        "model_f32.tflite: accuracy 100.00% here is not the 90.00% the manifest records; the manifest or the file "
        "was changed",
        "manifest.json: the float model's recorded 100.00% and its float reference's 90.00% cannot both be right; "
        "the manifest was changed",
    )


def test_on_part_of_the_set_the_float_figure_is_the_reference_run_on_the_same_images():
    int8 = Answering("model_int8.tflite", [0, 1, 0, 0, 1, 2, 0, 1, 2, 0])  # 3 of the first 4 right
    reference = Answering("model_f32.tflite", TRUTH)  # all 4 right
    test = self_check.CheckImages(np.arange(4), TRUTH[:4], whole=False)
    verdict = self_check.check([int8], reference, test, document(float_accuracy=0.5), tolerance_points=10)
    (result,) = verdict.results
    assert (result.accuracy, result.float_accuracy) == (0.75, 1.0)
    assert verdict.float_accuracy_source == "from model_f32.tflite run here on the same 4 images"
    assert verdict.failures == ("model_int8.tflite: accuracy 75.00% is 25.00 points below the float model's "
                                "100.00% (tolerance 10.00)",)


def test_without_a_reference_the_recorded_figure_is_used_and_said_to_be_the_whole_set_s():
    int8 = Answering("model_int8.tflite", TRUTH)
    test = self_check.CheckImages(np.arange(4), TRUTH[:4], whole=False)
    verdict = self_check.check([int8], None, test, document(float_accuracy=0.9))
    assert verdict.results[0].float_accuracy == 0.9 and verdict.results[0].agreement_with_float is None
    assert verdict.float_accuracy_source == "recorded at export on the whole test set" and verdict.passed
