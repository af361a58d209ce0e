"""mnist-edge's on-device runtime: numpy and one interpreter, never TensorFlow."""
