"""When int8 loses: the outlier models of tests/outlier_models.py, each in every precision, on the test set.

    .venv/bin/python benchmarks/int8_outliers.py [--artifacts artifacts] [--k 1 100 300 1000]

Builds the models from the trained seed model (ARTIFACTS/model.keras), converts each to plain
int8, int8 with the layer the debugger ranks worst kept in float, and 16x8, all calibrated as the export does (300
stratified training images, seed 0), and runs them with LiteRT on the 10,000 test images. Prints
a Markdown table: accuracy, and top-1 agreement with the Keras model.
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from edge_runtime import backends, classifier, preprocessing  # noqa: E402
from export import calibration, pipeline, sensitivity, to_tflite  # noqa: E402
from tests import outlier_models  # noqa: E402
from train import data  # noqa: E402


def accuracy_and_agreement(content, directory, images, labels, keras_labels, backend):
    path = pathlib.Path(directory) / "candidate.tflite"
    path.write_bytes(content)
    model = classifier.Classifier(backends.open_backend(path, backend=backend))
    predicted = model.predict(images).labels
    return float(np.mean(predicted == labels)), float(np.mean(predicted == keras_labels))


def worst_layer(keras_model, calibration_images):
    """The output tensor name of the weighted op the debugger ranks worst, and its op."""
    rows = sensitivity.rank_layers(keras_model, calibration_images, calibration_images[:50])
    row = next(row for row in rows if row["op"] in sensitivity.LAYER_OPS)
    return row["tensor"], row["op"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--k", type=float, nargs="+", default=[1, 100, 300, 1000])
    parser.add_argument("--weight-k", type=float, nargs="+", default=[10, 30, 100])
    parser.add_argument("--weight-layer", type=int, default=1, help="0: conv1 → conv2, 1: conv2 → dense")
    parser.add_argument("--backend", default="litert")
    arguments = parser.parse_args()

    import keras

    dataset = data.load_dataset()
    shape = dataset.image_shape
    test_images = preprocessing.to_model_input(dataset.x_test, shape, name="test images")
    labels = dataset.y_test.astype(np.int64)
    calibration_images = calibration.calibration_images(dataset.x_train, dataset.y_train, 300, 0, shape)
    seed, _ = pipeline.as_probabilities(keras.models.load_model(arguments.artifacts / "model.keras"),
                                        test_images[:64])
    models = [(f"conv1 channel 0 × {k:g}", outlier_models.activation_outlier(seed, k) if k != 1 else seed)
              for k in arguments.k]
    for k in arguments.weight_k:
        models.append((f"weight outlier × {k:g} (layer {arguments.weight_layer})",
                       outlier_models.weight_outlier(seed, k, arguments.weight_layer)))

    print("| model | float | int8 | int8 agreement | worst layer in float | 16x8 | 16x8 agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        for name, model in models:
            keras_labels = model.predict(test_images, batch_size=1000, verbose=0).argmax(axis=1)
            float_accuracy = float(np.mean(keras_labels == labels))
            figures = {}
            calibrated = to_tflite.calibrate(model, calibration_images)
            worst, op = worst_layer(model, calibration_images)
            variants = {
                "int8": to_tflite.convert_int8(model, calibration_images),
                "worst in float": to_tflite.quantize_calibrated(calibrated, [worst]),
                "16x8": to_tflite.convert_16x8(model, calibration_images),
            }
            for variant, content in variants.items():
                figures[variant] = accuracy_and_agreement(content, directory, test_images, labels, keras_labels,
                                                          arguments.backend)
            print(f"| {name} | {100 * float_accuracy:.2f}% | {100 * figures['int8'][0]:.2f}% | "
                  f"{100 * figures['int8'][1]:.2f}% | {100 * figures['worst in float'][0]:.2f}% ({op}) | "
                  f"{100 * figures['16x8'][0]:.2f}% | {100 * figures['16x8'][1]:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
