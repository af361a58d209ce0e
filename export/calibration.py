"""The representative images that int8 calibration sees: drawn from the training set, stratified by class.

Calibration sets the int8 ranges of every activation. It must see real digits (random noise gives
ranges that fit nothing) and never the test set (the accuracy reported on it would be flattered).
"""

import numpy as np

from edge_runtime import preprocessing


def stratified_indices(labels, count, seed):
    """Return `count` indices into `labels`, as equal a share per class as `count` allows, seeded.

    Raises: ValueError when `count` is not positive or exceeds the number of labels.
    """
    labels = np.asarray(labels)
    if not 0 < count <= len(labels):
        raise ValueError(f"calibration size must be between 1 and {len(labels)}, got {count}")
    generator = np.random.default_rng(seed)
    classes = np.unique(labels)
    # Classes first in random order so that the remainder of count / classes is spread fairly.
    share = np.full(len(classes), count // len(classes))
    share[generator.permutation(len(classes))[: count % len(classes)]] += 1
    chosen = []
    for label, quota in zip(classes, share):
        members = np.flatnonzero(labels == label)
        chosen.append(generator.choice(members, size=min(quota, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def calibration_images(train_images, train_labels, count, seed, input_shape):
    """Return `count` stratified training images as float32 (N, H, W, C) in [0, 1]."""
    indices = stratified_indices(train_labels, count, seed)
    return preprocessing.to_model_input(train_images[indices], input_shape, name="calibration images")
