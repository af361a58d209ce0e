"""Models where plain int8 loses accuracy, built from the trained seed model without changing what it computes.

Two function-preserving edits of the trained seed model (Conv 32 → MaxPool → Conv 64 → MaxPool →
Flatten → Dropout → Dense 10):

- `activation_outlier(model, k)`: output channel 0 of the first convolution (kernel and bias) × k,
  and the second convolution's weights that read that channel ÷ k. ReLU and max pooling commute
  with a positive scale, so the float model computes the same function; only one activation's
  range grows k-fold, as BatchNorm folding does to real models. int8 gives that whole tensor one
  scale, so the other 31 channels lose resolution. 16-bit activations recover it.
- `weight_outlier(model, k)`: the dense layer's weights that read one flattened feature which is
  zero on every image (a pooled position where a ReLU channel never fires) set to k times the
  layer's largest weight. The feature is zero, so the float model's outputs do not change; but
  int8 gives each output unit's weights one scale, and that scale now crushes the unit's real
  weights to a few levels. Activations are unchanged, so 16-bit activations do not help; keeping
  the dense layer in float does.
"""

import numpy as np


def clone_with_weights(model, weights_by_layer):
    """A copy of `model` with some layers' weights replaced (a dict: layer name -> list of arrays)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, weights in weights_by_layer.items():
        copy.get_layer(name).set_weights(weights)
    return copy


def layers_of_type(model, type_name):
    return [layer for layer in model.layers if type(layer).__name__ == type_name]


def activation_outlier(model, k, channel=0):
    """The seed model with output channel `channel` of its first convolution scaled by k (see the module doc)."""
    if not k > 0:
        raise ValueError(f"the scale k must be positive, got {k}")
    first, second = layers_of_type(model, "Conv2D")[:2]
    kernel, bias = (np.array(value) for value in first.get_weights())
    kernel[..., channel] *= k
    bias[channel] *= k
    next_kernel, next_bias = (np.array(value) for value in second.get_weights())
    next_kernel[:, :, channel, :] /= k
    return clone_with_weights(model, {first.name: [kernel, bias], second.name: [next_kernel, next_bias]})


def dead_feature(model, images):
    """The index of a flattened feature (the dense layer's input) that is zero on every one of `images`.

    Raises: ValueError when every feature fires on some image.
    """
    import keras

    dense = layers_of_type(model, "Dense")[-1]
    features = keras.Model(model.inputs, dense.input).predict(images, batch_size=1000, verbose=0)
    never = np.flatnonzero(np.all(features == 0.0, axis=0))
    if not len(never):
        raise ValueError("every feature of the dense layer's input is non-zero on some image")
    return int(never[0])


def weight_outlier(model, k, images):
    """The seed model with a dense weight outlier on a feature that is zero on all `images` (see the module doc).

    Returns: (model, the feature's index).
    """
    if not k > 0:
        raise ValueError(f"the scale k must be positive, got {k}")
    feature = dead_feature(model, images)
    dense = layers_of_type(model, "Dense")[-1]
    kernel, bias = (np.array(value) for value in dense.get_weights())
    kernel[feature, :] = k * np.abs(kernel).max()
    return clone_with_weights(model, {dense.name: [kernel, bias]}), feature
