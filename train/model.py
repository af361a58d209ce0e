"""The seed model, as Keras' "simple MNIST convnet" example builds it (34,826 parameters on MNIST)."""

import keras

from train import data

MNIST_INPUT_SHAPE = (*data.MNIST_IMAGE_SHAPE, 1)


def build_model(input_shape=MNIST_INPUT_SHAPE, num_classes=10, dropout_rate=0.5):
    """Return the uncompiled seed model: two Conv2D+MaxPool blocks, Dropout, Dense(classes, softmax).

    Takes: the (height, width, channels) of the training images and their number of classes; on
    MNIST, (28, 28, 1) and 10 give the example's model exactly.
    """
    return keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape), name="image"),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(dropout_rate),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="mnist_convnet",
    )
