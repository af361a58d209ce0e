"""The seed model, exactly as Keras' "simple MNIST convnet" example builds it (34,826 parameters)."""

import keras

from edge_runtime import preprocessing


def build_model(dropout_rate=0.5):
    """Return the uncompiled seed model: two Conv2D+MaxPool blocks, Dropout, Dense(10, softmax)."""
    return keras.Sequential(
        [
            keras.Input(shape=preprocessing.INPUT_SHAPE, name="image"),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(dropout_rate),
            keras.layers.Dense(len(preprocessing.LABELS), activation="softmax"),
        ],
        name="mnist_convnet",
    )
