"""What a user writes without mnist-edge to classify one PNG digit: the baseline `predict`'s start is held to.

    python benchmarks/bare_predict_png.py MODEL.tflite digit.png
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
height, width = source["shape"][1:3]
pixels = 255 - np.asarray(Image.open(sys.argv[2]).convert("L").resize((width, height)), dtype=np.float32)
scale, zero_point = source["quantization"]
interpreter.set_tensor(source["index"], np.clip(np.round(pixels / 255 / scale) + zero_point, -128, 127)
                       .astype(np.int8).reshape(source["shape"]))
interpreter.invoke()
print(sys.argv[2], int(interpreter.get_tensor(target["index"]).argmax()))
