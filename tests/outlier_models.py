"""Models where plain int8 loses accuracy, built from the trained seed model without changing what it computes.

Two function-preserving edits of the trained seed model (Conv 32 → MaxPool → Conv 64 → MaxPool →
Flatten → Dropout → Dense 10):

- `activation_outlier(model, k)`: output channel 0 of the first convolution (kernel and bias) × k,
  and the second convolution's weights that read that channel ÷ k. ReLU and max pooling commute
  with a positive scale, so the float model computes the same function; only one activation's
  range grows k-fold, as BatchNorm folding does to real models. int8 gives that whole tensor one
  scale, so the other 31 channels lose resolution. 16-bit activations recover it.
- `weight_outlier(model, k)`: the reverse. One channel of a layer ÷ k, and the next layer's weights
  that read it × k. Now every output channel of the next layer has one large weight, and int8
  gives each output channel's weights one scale, so its other weights are crushed to a few levels.
  Weights stay int8 in 16x8, so 16-bit activations do not help; keeping that next layer in float
  does (the small channel still loses some resolution as an int8 activation).
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


def weight_outlier(model, k, layer=1, channel=0):
    """The seed model with channel `channel` of weighted layer `layer` (0: first convolution, 1: second)
    scaled by 1/k, and the next layer's weights that read it scaled by k (see the module doc)."""
    if not k > 0:
        raise ValueError(f"the scale k must be positive, got {k}")
    weighted = layers_of_type(model, "Conv2D") + layers_of_type(model, "Dense")
    producer, consumer = weighted[layer], weighted[layer + 1]
    kernel, bias = (np.array(value) for value in producer.get_weights())
    kernel[..., channel] /= k
    bias[channel] /= k
    next_kernel, next_bias = (np.array(value) for value in consumer.get_weights())
    if next_kernel.ndim == 4:
        next_kernel[:, :, channel, :] *= k
    else:
        # Flatten of (H, W, C) puts the channel on the fastest axis: features c, c + C, c + 2C, ...
        next_kernel[channel::kernel.shape[-1], :] *= k
    return clone_with_weights(model, {producer.name: [kernel, bias], consumer.name: [next_kernel, next_bias]})
