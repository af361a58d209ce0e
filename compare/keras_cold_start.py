"""`python -m compare.keras_cold_start MODEL.keras`: load a Keras model and predict once in a fresh
process, then print its peak memory (`first-prediction <KiB>`), the figure compare sets beside ours."""

import os
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m compare.keras_cold_start MODEL.keras", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from edge_runtime.cli import cold_start

    model = keras.models.load_model(argv[0])
    model.predict(np.zeros((1, *model.inputs[0].shape[1:]), np.float32), verbose=0)
    cold_start.report_peak_rss()
    return 0


if __name__ == "__main__":
    sys.exit(main())
