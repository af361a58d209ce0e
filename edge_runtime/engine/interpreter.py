"""A numpy-only interpreter for quantized .tflite models: the `numpy` backend.

It runs where no compiled interpreter installs (ARMv6 and 32-bit Raspberry Pis, new Pythons),
with the same interface as LiteRT's Interpreter. It runs what the export's recovery ladder can
pick: full-integer int8, 16x8 (int16 activations) and int8 with some layers kept in float. Its
integer outputs are bit-identical to LiteRT's reference kernels (OpResolverType.BUILTIN_REF);
float layers agree with LiteRT's within 1e-5. The int8 operators are in kernels, the 16x8 ones in
kernels_16x8, the float ones in float_kernels, the file reader in schema, the fixed-point
arithmetic in fixed_point.

    interpreter = Interpreter(model_path="model_int8.tflite")
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], int8_batch)
    interpreter.invoke()

Models are checked when loaded: an operator the engine lacks, or a float model, is refused then
with ModelFileError, in one line that names the operator.

The 16x8 and float kernels, and sysconfig, are imported only when a model or a CPU needs them: a
plain int8 model's cold start, what a Pi Zero pays for every `predict`, does without them (~0.8 ms).
"""

import os
import platform
import struct
import sys

import numpy as np

from edge_runtime import errors
from edge_runtime.engine import kernels, schema

ARITHMETIC_ENVIRONMENT_VARIABLE = "MNIST_EDGE_NUMPY_ARITHMETIC"
ARITHMETICS = ("float", "integer")


def soft_float_abi():
    """True when this Python runs with software floating point (32-bit ARM soft-float, e.g. Debian armel).

    How: only 32-bit ARM has both ABIs in use. There, the ELF header of the running interpreter says
    which one it was built for (e_flags: EF_ARM_ABI_FLOAT_HARD 0x400 or EF_ARM_ABI_FLOAT_SOFT 0x200).
    When the header says neither (or cannot be read), the GNU triplet Python was configured for
    decides: ...-gnueabihf is hard-float, ...-gnueabi soft-float.
    """
    machine = platform.machine().lower()
    if not machine.startswith("arm") or machine.startswith("arm64"):
        return False
    flags = elf_flags(sys.executable)
    if flags is not None:
        if flags & 0x400:
            return False
        if flags & 0x200:
            return True
    import sysconfig

    triplet = " ".join(str(sysconfig.get_config_var(name) or "") for name in ("HOST_GNU_TYPE", "MULTIARCH"))
    return "gnueabi" in triplet and "gnueabihf" not in triplet


def elf_flags(path):
    """e_flags of a 32-bit little-endian ELF file, or None when it is not one or cannot be read."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(52)
    except OSError:
        return None
    if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] != 1 or header[5] != 1:
        return None
    return struct.unpack_from("<I", header, 36)[0]


def choose_arithmetic(requested=None):
    """"integer" on soft-float CPUs, "float" (BLAS) elsewhere; `requested` or the environment overrides."""
    choice = requested or os.environ.get(ARITHMETIC_ENVIRONMENT_VARIABLE) or None
    if choice is None:
        return "integer" if soft_float_abi() else "float"
    if choice not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, got {choice!r}")
    return choice


def kernel_class(operator, tensors):
    """The kernel for `operator`, chosen by the type of its first input: int16 → 16x8, float32 → float
    (a layer a fallback kept in float; QUANTIZE from float stays the int8 kernel), else int8."""
    first = tensors[operator.inputs[0]] if operator.inputs and operator.inputs[0] >= 0 else None
    type_name = None if first is None else first.type_name
    if type_name == "int16":
        from edge_runtime.engine import kernels_16x8

        if operator.name in kernels_16x8.KERNELS_16X8:
            return kernels_16x8.KERNELS_16X8[operator.name]
    if type_name == "float32":
        from edge_runtime.engine import float_kernels

        if operator.name in float_kernels.FLOAT_KERNELS:
            return float_kernels.FLOAT_KERNELS[operator.name]
    return kernels.KERNELS.get(operator.name)


def supported_operators():
    from edge_runtime.engine import float_kernels, kernels_16x8

    return ", ".join(sorted(kernels.KERNELS)) + "; in 16x8: " + ", ".join(sorted(kernels_16x8.KERNELS_16X8)) + \
        "; in float: " + ", ".join(sorted(float_kernels.FLOAT_KERNELS))


class Interpreter:
    """Run an int8 .tflite model with numpy; the subset of LiteRT's Interpreter that runtimes use.

    Takes: `model_path` or `model_content` (bytes); `num_threads` is accepted for compatibility
    (numpy's BLAS decides its own threads); `arithmetic` "float" or "integer" to override the
    automatic choice (see choose_arithmetic). Raises: ModelFileError for a corrupt file, an
    unsupported operator or a float model; ValueError for a bad `arithmetic`.
    """

    def __init__(self, model_path=None, model_content=None, num_threads=None, arithmetic=None):
        self.arithmetic = choose_arithmetic(arithmetic)
        self.num_threads = num_threads
        if model_content is None:
            if model_path is None:
                raise ValueError("give model_path or model_content")
            self.path = str(model_path)
            try:
                with open(model_path, "rb") as handle:
                    model_content = handle.read()
            except OSError as error:
                raise errors.ModelFileError(f"{model_path}: cannot read: {error.strerror or error}") from None
        else:
            self.path = "<model_content>"
        try:
            self.model = schema.read_model(model_content)
        except schema.SchemaError as error:
            raise errors.ModelFileError(f"{self.path}: corrupt or unsupported TFLite model: {error}") from None
        self.kernels = self.build_kernels()
        self.constants = {tensor.index: tensor.data for tensor in self.model.tensors if tensor.data is not None}
        self.shapes = {index: tuple(self.model.tensors[index].shape) for index in self.model.inputs}
        self.values = {}
        self.allocated = False
        self.last_use = self.plan_lifetimes()

    def refuse(self, message):
        return errors.ModelFileError(f"{self.path}: the numpy engine cannot run this model: {message}")

    def build_kernels(self):
        model = self.model
        if model.subgraph_count > 1:
            raise self.refuse(f"it has {model.subgraph_count} subgraphs (control flow); only one is supported")
        for index in model.inputs + model.outputs:
            tensor = model.tensors[index]
            if tensor.dtype is None or np.dtype(tensor.dtype) not in (np.dtype(np.int8), np.dtype(np.int16),
                                                                      np.dtype(np.float32)):
                raise self.refuse(f"model input/output {tensor.name!r} is {tensor.type_name}")
        built = []
        for operator in model.operators:
            found = kernel_class(operator, model.tensors)
            if found is None:
                raise self.refuse(f"operator {operator.index} is {operator.name}, which it does not support "
                                  f"(it supports {supported_operators()})")
            try:
                built.append(found(operator, model.tensors, self.arithmetic))
            except kernels.UnsupportedModel as error:
                raise self.refuse(f"operator {operator.index}: {error}") from None
            except (ValueError, LookupError, TypeError, AttributeError, ArithmeticError) as error:
                raise errors.ModelFileError(f"{self.path}: corrupt or unsupported TFLite model: operator "
                                            f"{operator.index} ({operator.name}): {error}") from None
        # A float model whose every op has a kernel still has float tensors flowing between them.
        for index in model.inputs:
            if model.tensors[index].type_name == "float32" and not any(
                    operator.name == "QUANTIZE" and operator.inputs[:1] == [index] for operator in model.operators):
                raise self.refuse("its input is float32 and is not quantized by a QUANTIZE op: this is a float model; "
                                  "the numpy engine runs quantized models only")
        return built

    def plan_lifetimes(self):
        """For each operator, the intermediate tensors whose last reader it is (freed right after it)."""
        last = {}
        for position, operator in enumerate(self.model.operators):
            for index in operator.inputs:
                if index >= 0:
                    last[index] = position
        keep = set(self.model.inputs) | set(self.model.outputs) | set(self.constants)
        frees = [[] for _ in self.model.operators]
        for index, position in last.items():
            if index not in keep:
                frees[position].append(index)
        return frees

    # --- LiteRT's interface ---

    def details(self, index):
        tensor = self.model.tensors[index]
        shape = self.shapes.get(index, tensor.shape)
        return {
            "name": tensor.name,
            "index": index,
            "shape": np.array(shape, dtype=np.int32),
            "shape_signature": np.array(tensor.shape_signature, dtype=np.int32),
            "dtype": tensor.dtype,
            "quantization": (float(tensor.scale), tensor.zero_point),
            "quantization_parameters": {
                "scales": tensor.scales.copy(),
                "zero_points": tensor.zero_points.astype(np.int32),
                "quantized_dimension": tensor.quantized_dimension,
            },
            "sparsity_parameters": {},
        }

    def get_input_details(self):
        return [self.details(index) for index in self.model.inputs]

    def get_output_details(self):
        return [self.details(index) for index in self.model.outputs]

    def resize_tensor_input(self, input_index, tensor_size, strict=False):
        if input_index not in self.model.inputs:
            raise ValueError(f"tensor {input_index} is not an input of the model")
        shape = tuple(int(size) for size in tensor_size)
        if len(shape) != len(self.model.tensors[input_index].shape) or any(size < 0 for size in shape):
            raise ValueError(f"cannot resize input {input_index} to {list(shape)}")
        self.shapes[input_index] = shape
        self.values.pop(input_index, None)
        self.allocated = False

    def allocate_tensors(self):
        """Work out every tensor's shape for the current input shapes, folding shape-only operators."""
        values = dict(self.constants)
        shapes = {index: tuple(data.shape) for index, data in self.constants.items()}
        shapes.update({index: self.shapes[index] for index in self.model.inputs})
        self.output_shapes = []
        for kernel in self.kernels:
            operator = kernel.operator
            try:
                input_shapes = [shapes[index] if index >= 0 else None for index in operator.inputs]
                out = kernel.shapes(input_shapes, values)
            except kernels.UnsupportedModel as error:
                raise self.refuse(f"operator {operator.index}: {error}") from None
            except (ValueError, LookupError, TypeError, ArithmeticError) as error:
                raise ValueError(f"cannot allocate tensors: operator {operator.index} ({operator.name}): {error}") from None
            self.output_shapes.append([tuple(int(size) for size in shape) for shape in out])
            for index, shape in zip(operator.outputs, self.output_shapes[-1]):
                shapes[index] = shape
            if kernel.folds:
                for index, value in zip(operator.outputs, kernel.run(None, self.output_shapes[-1])):
                    values[index] = value
        self.shapes = shapes
        self.folded = {index: value for index, value in values.items() if index not in self.constants}
        self.allocated = True

    def set_tensor(self, tensor_index, value):
        if tensor_index not in self.model.inputs:
            raise ValueError(f"tensor {tensor_index} is not an input of the model")
        tensor = self.model.tensors[tensor_index]
        value = np.asarray(value)
        if value.dtype != np.dtype(tensor.dtype):
            raise ValueError(f"cannot set tensor: got a value of type {value.dtype.name.upper()} but expected type "
                             f"{np.dtype(tensor.dtype).name.upper()} for input {tensor_index}, name: {tensor.name}")
        if tuple(value.shape) != tuple(self.shapes[tensor_index]):
            raise ValueError(f"cannot set tensor: dimension mismatch; got {list(value.shape)} but expected "
                             f"{list(self.shapes[tensor_index])} for input {tensor_index}")
        self.values[tensor_index] = np.array(value, copy=True)

    def invoke(self):
        if not self.allocated:
            raise RuntimeError("call allocate_tensors() first")
        values = {**self.constants, **self.folded}
        for index in self.model.inputs:
            if index not in self.values:
                raise ValueError(f"input tensor {index} has not been set")
            values[index] = self.values[index]
        for kernel, shapes, frees in zip(self.kernels, self.output_shapes, self.last_use):
            operator = kernel.operator
            if kernel.folds:
                continue
            inputs = [values[index] if index >= 0 else None for index in operator.inputs]
            for index, result in zip(operator.outputs, kernel.run(inputs, shapes)):
                values[index] = result
            for index in frees:
                values.pop(index, None)
        self.results = {index: values[index] for index in self.model.outputs}

    def get_tensor(self, tensor_index):
        if tensor_index in getattr(self, "results", {}):
            return self.results[tensor_index].copy()
        if tensor_index in self.values:
            return self.values[tensor_index].copy()
        if tensor_index in self.constants:
            return np.array(self.constants[tensor_index])
        raise ValueError(f"tensor {tensor_index} is not available (the numpy engine keeps only inputs and outputs)")
