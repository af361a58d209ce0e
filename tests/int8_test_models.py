"""Small Keras models converted to int8 TFLite, to test the numpy engine op by op against LiteRT.

Between them they make the converter emit every op the engine implements: per-channel CONV_2D
with SAME/VALID padding, strides, RELU/RELU6/none; DEPTHWISE_CONV_2D; MAX_POOL_2D and
AVERAGE_POOL_2D (SAME and VALID); MEAN (GlobalAveragePooling2D); ADD; PAD (ZeroPadding2D);
SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND and RELU (a dilated convolution); FULLY_CONNECTED with and
without bias; SOFTMAX; QUANTIZE/DEQUANTIZE (float input and output); and SHAPE, STRIDED_SLICE,
PACK and RESHAPE (Flatten). Weights are random (seeded) and calibration uses real MNIST training
images, as the export does: untrained weights exercise the arithmetic just as well.
"""

import pathlib

import numpy as np

# Where they are checked in, converted: the engine's tests read them there, without TensorFlow.
FIXTURE_DIRECTORY = pathlib.Path(__file__).resolve().parent / "fixtures" / "engine"


def layers():
    import keras

    return keras.layers


def seed_like():
    """The seed architecture: Conv-ReLU, MaxPool, Conv-ReLU, MaxPool, Flatten, Dense softmax."""
    import keras

    L = layers()
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(), L.Dense(10, activation="softmax")])


def batchnorm_gap():
    """Fashion-MNIST style: Conv + BatchNormalization + ReLU, GlobalAveragePooling2D, Dense without bias."""
    import keras

    L = layers()
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(16, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(2), L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
        L.GlobalAveragePooling2D(), L.Dense(10, use_bias=False), L.Softmax()])


def colour():
    """A 32×32×3 model: strided SAME conv with ReLU6, depthwise conv, residual ADD, average pool,
    dilated conv, zero padding, SAME max pool with stride 1, and two dense layers."""
    import keras

    L = layers()
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(inputs)
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1, activation="relu")(x)
    y = L.Conv2D(16, 1)(y)
    x = L.Add()([x, y])
    x = L.AveragePooling2D(3, strides=2, padding="same")(x)
    x = L.Conv2D(24, 3, dilation_rate=2, padding="same", activation="relu")(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.MaxPooling2D(3, strides=1, padding="same")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, strides=2)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(32, activation="relu")(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def with_tanh():
    """A model with an op the engine lacks (TANH), to test the refusal."""
    import keras

    L = layers()
    return keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(16, activation="tanh"), L.Dense(10)])


BUILDERS = {"seed_like": seed_like, "batchnorm_gap": batchnorm_gap, "colour": colour, "with_tanh": with_tanh}


def convert_all(directory, train_images):
    """Every test model converted into `directory`, and the colour one with float input and output too.

    Returns: {name: path}.
    """
    paths = {name: convert(name, directory, train_images) for name in BUILDERS}
    paths["colour_float_io"] = convert("colour", directory, train_images, float_io=True)
    return paths


def images_for(shape, grey_images):
    """Real digits as float32 model inputs of `shape` (H, W, C): padded and tinted for colour models."""
    images = grey_images.astype(np.float32) / 255.0
    height, width, channels = shape
    pad_height, pad_width = height - images.shape[1], width - images.shape[2]
    images = np.pad(images, ((0, 0), (pad_height // 2, pad_height - pad_height // 2),
                             (pad_width // 2, pad_width - pad_width // 2)))[..., None]
    if channels == 3:
        images = images * np.array([1.0, 0.6, 0.3], np.float32)
    return images


def convert(name, directory, train_images, float_io=False):
    """Build model `name` (seeded), convert it to int8 calibrated on `train_images`; return the path."""
    import keras

    from export import to_tflite

    keras.utils.set_random_seed(7)
    model = BUILDERS[name]()
    calibration = images_for(model.input_shape[1:], train_images)
    if float_io:
        content = to_tflite.run_converter(to_tflite.quantizing_converter(model, calibration))
    else:
        content = to_tflite.convert_int8(model, calibration)
    path = directory / f"{name}{'_float_io' if float_io else ''}.tflite"
    path.write_bytes(content)
    return path
