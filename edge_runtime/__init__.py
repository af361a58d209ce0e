"""mnist-edge's on-device runtime: numpy and one interpreter, never TensorFlow.

    from edge_runtime import Classifier
    model = Classifier.load("bundle/model_int8.tflite")
    print(model.predict(images).labels)

Nothing heavy is imported here: `Classifier` is loaded on first use, so `import edge_runtime`
costs almost nothing and the cold start stays that of numpy and the interpreter.
"""

__version__ = "0.1.0"
__all__ = ["Classifier", "Predictions"]


def __getattr__(name):
    if name in __all__:
        from edge_runtime import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
