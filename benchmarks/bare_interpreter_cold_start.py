"""The bare-interpreter baselines for `make bench`: the few lines a user would write without mnist-edge.

    python benchmarks/bare_interpreter_cold_start.py MODEL.tflite [litert|numpy]

From process start: import the interpreter (LiteRT, or the numpy engine on its own), load the model,
run one all-zero input, then print the peak memory (`first-prediction <KiB>`, as
edge_runtime.cli.cold_start does) so that they can be set side by side with our runtime's.
"""

import sys

import numpy as np


def main(model_path, engine="litert"):
    if engine == "numpy":
        from edge_runtime.engine.interpreter import Interpreter
    else:
        from ai_edge_litert.interpreter import Interpreter
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
    main(*sys.argv[1:3])
