"""Train the seed model on MNIST and save the model, its history and its learning curves."""

import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

from edge_runtime import atomic_files, backends, preprocessing
from train import command, data

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
CURVES_FILE = "training_curves.png"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; `python -m train` flags map onto these fields."""

    output_dir: pathlib.Path = pathlib.Path("artifacts")
    data_source: pathlib.Path | None = None  # None: the pinned MNIST; else IDX directory or .npz
    labels_path: pathlib.Path | None = None  # class names, one a line (default: see data.class_names)
    extra_data: pathlib.Path | None = None  # a Keras-layout .npz whose x_train/y_train are added (samples)
    cache_dir: pathlib.Path | None = None
    epochs: int = 3
    batch_size: int = 128
    validation_split: float = 0.1
    dropout_rate: float = 0.5
    seed: int = 1337

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"validation split must be in [0, 1), got {self.validation_split}")


def train(config):
    """Run one training and write model.keras, history.json and training_curves.png.

    Returns: a dict of results (test accuracy and loss, epochs, seconds, paths).
    """
    output_dir = pathlib.Path(config.output_dir)
    prepare_output_dir(output_dir)
    dataset = data.load_dataset(config.data_source, config.cache_dir)
    if config.extra_data is not None:
        before = len(dataset.x_train)
        dataset = data.with_extra_training_data(dataset, config.extra_data)
        print(f"Extra training data: {len(dataset.x_train) - before:,} images from {config.extra_data}")
    names, names_source = data.class_names(config.data_source, config.labels_path, dataset.num_classes)
    data.check_classes(dataset, len(names), config.data_source)
    keras, tf = import_tensorflow()
    print(f"Data: {len(dataset.x_train):,} training and {len(dataset.x_test):,} test images of "
          f"{dataset.image_shape}, {len(names)} classes ({names_source})")
    x_train = preprocessing.to_model_input(dataset.x_train, dataset.image_shape, name="training images")
    x_test = preprocessing.to_model_input(dataset.x_test, dataset.image_shape, name="test images")
    y_train = keras.utils.to_categorical(dataset.y_train, len(names))
    y_test = keras.utils.to_categorical(dataset.y_test, len(names))

    # Seeds every generator Keras uses (weights, dropout, shuffling) and makes TensorFlow pick
    # deterministic kernels, so two runs on one machine give the same model.
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    from train import model  # imports Keras: only once the data is known to be good

    network = model.build_model(dataset.image_shape, len(names), config.dropout_rate)
    network.summary()
    network.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    started = time.monotonic()
    # fit and evaluate build tf.data pipelines, and TensorFlow's C++ logs an "E0000 ... NodeDef mentions
    # attribute use_unbounded_threadpool" line for each, harmless but read as an error: kept off stderr
    # (MNIST_EDGE_NATIVE_LOG=1 shows it). Keras' progress goes to stdout and stays.
    history = backends.without_native_stderr(lambda: network.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_split=config.validation_split,
        # Keras' live bar on a terminal; into a file or a CI log its "\r" frames would pile up on one
        # line, so there it writes a line per epoch.
        verbose="auto" if sys.stdout.isatty() else 2,
        # Ctrl-C stops training between batches (see train/command.py).
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: command.stop_if_interrupted())],
    ))
    seconds = time.monotonic() - started
    test_loss, test_accuracy = backends.without_native_stderr(lambda: network.evaluate(x_test, y_test, verbose=0))
    print(f"Test loss: {test_loss:.4f}  Test accuracy: {100 * test_accuracy:.2f}%")

    results = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "test_images": int(len(x_test)),
        "epochs": config.epochs,
        "seed": config.seed,
        "training_seconds": round(seconds, 1),
        "parameters": int(network.count_params()),
        "history": {name: [float(value) for value in values] for name, values in history.history.items()},
        "config": {key: str(value) if isinstance(value, pathlib.Path) else value
                   for key, value in dataclasses.asdict(config).items()},
    }
    # The model is the commit point: the old one goes first, the new one is written last, so an
    # interrupted run leaves no model beside a history that is not its own (and make trains again).
    command.stop_if_interrupted()
    (output_dir / MODEL_FILE).unlink(missing_ok=True)
    atomic_files.write_text_atomically(output_dir / HISTORY_FILE, json.dumps(results, indent=2) + "\n")
    plot_history(results["history"], output_dir / CURVES_FILE)
    command.stop_if_interrupted()
    with atomic_files.atomic_output(output_dir / MODEL_FILE) as temporary:
        network.save(temporary)
    return results


def prepare_output_dir(output_dir):
    """Create `output_dir` and sweep temporary files a killed run left; DataError if it cannot be."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise data.DataError(f"{output_dir}: not a directory (the output directory must be one)") from None
    except OSError as error:
        raise data.DataError(f"{output_dir}: cannot create the output directory: {error.strerror or error}") from None
    atomic_files.remove_partials(output_dir)


def import_tensorflow():
    """Import Keras and TensorFlow with their native start-up lines kept off stderr; return (keras, tf)."""

    def load():
        import keras
        import tensorflow

        return keras, tensorflow

    return backends.without_native_stderr(load)


def plot_history(history, path):
    """Draw loss and accuracy per epoch (training and validation) side by side into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = pyplot.subplots(1, 2, figsize=(10, 4))
    for axis, metric, title in ((loss_axis, "loss", "Loss"), (accuracy_axis, "accuracy", "Accuracy")):
        axis.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_files.atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100)
    pyplot.close(figure)
