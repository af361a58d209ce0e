"""An evaluation set of handwritten-looking digits (fonts and mouse strokes, never MNIST) and the tools
that measure `predict` on it against a simple reference preparation."""
