"""The bare-interpreter baseline for `make bench`: the few lines a user would write without mnist-edge.

    python benchmarks/bare_litert_cold_start.py MODEL.tflite

From process start: import LiteRT, load the model, run one all-zero input, then print the peak
memory (`first-prediction <KiB>`, as edge_runtime.cold_start does) so the two can be set side by side.
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main(model_path):
    interpreter = Interpreter(model_path=model_path, num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
    interpreter.invoke()
    interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print("first-prediction", peak, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
