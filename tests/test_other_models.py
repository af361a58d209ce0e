"""Models other than the seed go through the whole chain: export → validation → compare → bundle → eval → predict.

Two models unlike the seed, each trained here for real and then handled only through the command
lines a user runs:
- Fashion-MNIST (Debian's real IDX files) with BatchNormalization, GlobalAveragePooling2D and a
  logits output (export appends the softmax), class names from a labels file;
- a colour model on 32×32×3 pictures of shapes that the test draws, class names from a labels.txt
  beside the data.
Slow: about two minutes on two cores.
"""

import json
import pathlib
import shutil
import tarfile

import numpy as np
import pytest

from tests import colour_shapes
from tests.conftest import REPO_ROOT, require, run_cli
from tests.serve_process import ServeProcess, call_json

pytestmark = pytest.mark.slow
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = REPO_ROOT / "examples" / "fashion-mnist" / "labels.txt"


def run_chain(keras_path, data, output, *export_flags):
    """export, compare, bundle, and eval of the unpacked bundle, each through its CLI; returns the bundle dir."""
    exported = run_cli("-m", "export", "--model", str(keras_path), "--data", str(data), "--output-dir", str(output),
                       *export_flags)
    assert exported.returncode == 0, exported.stderr[-3000:]
    compared = run_cli("-m", "compare", "--artifacts", str(output), "--no-speed")
    assert compared.returncode == 0, compared.stderr[-3000:]
    bundled = run_cli("-m", "export.bundle", "--artifacts", str(output))
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    with tarfile.open(output / "mnist-edge-bundle.tar.gz") as archive:
        archive.extractall(output / "device", filter="data")
    bundle = output / "device" / "mnist-edge-bundle"
    evaluated = run_cli("-m", "edge_runtime", "eval", str(bundle), "--strict", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return bundle, json.loads(evaluated.stdout)


def predicted_classes(bundle, pictures):
    result = run_cli("-m", "edge_runtime", "predict", str(bundle / "model_int8.tflite"), *map(str, pictures), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return [entry["class_name"] for entry in json.loads(result.stdout)["predictions"]], result.stdout


def train(model, x_train, y_train, epochs):
    import keras

    keras.utils.set_random_seed(7)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                  if model.layers[-1].get_config().get("activation") == "linear" else "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train.astype(np.float32) / 255, y_train, batch_size=128, epochs=epochs, verbose=0)
    return model


def test_fashion_mnist_with_batchnorm_gap_and_logits_goes_through_the_chain(tmp_path):
    require((FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
            "Debian's dataset-fashion-mnist is not installed (make system-deps)")
    import keras
    from PIL import Image

    from train import data

    fashion = data.load_dataset(FASHION_MNIST)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same"), layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10),  # logits: no softmax
    ])
    # momentum 0.9: the moving statistics settle within a short training run (0.99 needs far longer).
    train(model, fashion.x_train[:20000, ..., None], fashion.y_train[:20000], epochs=3)
    model.save(tmp_path / "fashion.keras")

    output = tmp_path / "artifacts"
    bundle, report = run_chain(tmp_path / "fashion.keras", FASHION_MNIST, output, "--labels", str(FASHION_LABELS))
    document = json.loads((output / "manifest.json").read_text())
    assert document["classes"][1] == "Trouser" and document["preparation"] == {"name": "plain", "polarity": "light-on-dark"}
    assert document["source_model"]["output"].startswith("logits")
    assert document["source_model"]["test_accuracy"] > 0.75
    compare_report = json.loads((output / "report" / "report.json").read_text())
    assert compare_report["classes"][9] == "Ankle boot" and compare_report["gate"]["passed"]
    assert {row["model"] for row in report["results"]} == {"model_int8.tflite", "model_int8.onnx"}
    assert "Trouser" in report["results"][0]["per_class_accuracy"]

    # Photographs as a user takes them: dark garments on white paper, much larger than 28×28.
    pictures = []
    for label in (1, 9, 8):  # Trouser, Ankle boot, Bag
        index = int(np.flatnonzero((fashion.y_test == label))[0])
        picture = Image.fromarray(255 - fashion.x_test[index]).resize((224, 224), Image.BILINEAR)
        pictures.append(tmp_path / f"{label}.png")
        picture.save(pictures[-1])
    classes, text = predicted_classes(bundle, pictures)
    assert classes[0] == "Trouser", text
    assert sum(name == expected for name, expected in zip(classes, ("Trouser", "Ankle boot", "Bag"))) >= 2, text


def test_a_colour_model_with_labels_beside_its_data_goes_through_the_chain(tmp_path):
    import keras
    from PIL import Image

    x_train, y_train, x_test, y_test = colour_shapes.make_dataset(train_count=3000, test_count=1500)
    data_dir = tmp_path / "shapes"
    data_dir.mkdir()
    np.savez_compressed(data_dir / "shapes.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (data_dir / "labels.txt").write_text("\n".join(colour_shapes.CLASS_NAMES) + "\n")
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(3, activation="softmax"),
    ])
    train(model, x_train, y_train, epochs=10)
    model.save(tmp_path / "shapes.keras")

    output = tmp_path / "artifacts"
    # On 1,500 test images one image is 0.07 points: the user's tolerance here is a point, recorded in
    # the manifest, and the device's eval and compare's gate then hold the model to it.
    bundle, report = run_chain(tmp_path / "shapes.keras", data_dir / "shapes.npz", output, "--max-int8-drop", "1.0")
    document = json.loads((output / "manifest.json").read_text())
    assert document["classes"] == list(colour_shapes.CLASS_NAMES)
    assert document["input"]["shape"] == [32, 32, 3] and document["preparation"]["name"] == "plain"
    assert document["source_model"]["test_accuracy"] > 0.85
    assert document["tolerances"]["int8_max_accuracy_drop_points"] == 1.0
    assert json.loads((output / "report" / "report.json").read_text())["classes"] == list(colour_shapes.CLASS_NAMES)

    # Larger colour pictures of each shape, as PNG and JPEG files.
    generator = np.random.default_rng(99)
    pictures, expected = [], []
    for index, kind in enumerate(colour_shapes.CLASS_NAMES * 2):
        picture = Image.fromarray(colour_shapes.draw(kind, generator, size=32)).resize((160, 160), Image.BILINEAR)
        pictures.append(tmp_path / f"{kind}-{index}.{'png' if index % 2 else 'jpg'}")
        picture.save(pictures[-1])
        expected.append(kind)
    classes, text = predicted_classes(bundle, pictures)
    assert sum(name == truth for name, truth in zip(classes, expected)) >= 5, text

    # serve answers with the same record, and the image the page draws is shaped as /api/info says.
    with ServeProcess(bundle, "--self-check-images", "0") as server:
        status, info = call_json(server, "GET", "/api/info")
        assert status == 200 and info["input_shape"] == [32, 32, 3]
        status, answer = call_json(server, "POST", "/api/predict", body=pictures[1].read_bytes(),
                                   headers={"Content-Type": "image/png"})
    assert status == 200, answer
    (served,) = answer["predictions"]
    assert np.asarray(served["input"]).shape == (32, 32, 3) and served["class_name"] == classes[1]
    shutil.rmtree(output / "device")
