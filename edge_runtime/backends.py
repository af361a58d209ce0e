"""Interpreters that run an exported model: LiteRT, tflite-runtime or TensorFlow Lite for .tflite,
onnxruntime for .onnx. `open_backend` is the one place that chooses.

Every backend takes a batch already in the model's input dtype (float32, or int8 for a full-integer
model) and returns the model's raw output; quantizing and dequantizing is the classifier's job.
Interpreter modules are imported only when a model is opened, so importing this is cheap. Paths are
handled with os.path here, and a backend's `path` is made a pathlib.Path only when asked for: pathlib
(with the urllib.parse and ipaddress it imports) costs `predict`'s start ~3 ms, see as_path.
"""

import importlib
import os

import numpy as np

from edge_runtime import errors

# Tried in this order for .tflite files. TensorFlow comes late: it works, but costs ~600 MB of
# memory and seconds of start-up, which is what this runtime exists to avoid. The numpy engine
# (quantized models only: int8, 16x8, int8 with float layers) is the fallback where no interpreter
# installs, e.g. ARMv6 and 32-bit Pis.
TFLITE_INTERPRETERS = {
    "litert": ("ai_edge_litert.interpreter", "mnist-edge[edge]"),
    "tflite-runtime": ("tflite_runtime.interpreter", "mnist-edge[tflite-runtime]"),
    "tensorflow": ("tensorflow.lite.python.interpreter", "tensorflow"),
    "numpy": ("edge_runtime.engine.interpreter", "mnist-edge"),
}
INT8_ONLY_BACKENDS = ("numpy",)
ONNX_RUNTIMES = {"onnxruntime": ("onnxruntime", "mnist-edge[onnx]")}
BACKEND_NAMES = (*TFLITE_INTERPRETERS, *ONNX_RUNTIMES)
TFLITE_IDENTIFIER = b"TFL3"
# `reference` runs LiteRT, tflite-runtime and TensorFlow Lite with their reference kernels
# (OpResolverType.BUILTIN_REF: plain C++, no XNNPACK or SIMD paths), whose integer results are the
# same on every CPU; the numpy engine computes exactly what they do. For bit-exact comparisons.
KERNELS_ENVIRONMENT_VARIABLE = "MNIST_EDGE_TFLITE_KERNELS"
KERNELS = ("default", "reference")


def as_path(location):
    """`location` (a str or path-like) as a pathlib.Path, importing pathlib only now."""
    import pathlib

    return pathlib.Path(location)


class ModelFile:
    """What every backend knows of its file: `location` (str) and, made when asked, `path` (pathlib.Path)."""

    location = None

    @property
    def path(self):
        return as_path(self.location)


class TensorInfo:
    """What one model input or output looks like; scale/zero_point are None for float tensors.

    A plain class rather than a dataclass: `dataclasses` pulls in `inspect`, a measurable share
    of the runtime's cold start.
    """

    __slots__ = ("name", "dtype", "shape", "scale", "zero_point")

    def __init__(self, name, dtype, shape, scale, zero_point):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.scale = scale
        self.zero_point = zero_point

    def as_dict(self):
        return {
            "name": self.name,
            "dtype": np.dtype(self.dtype).name,
            "shape": list(self.shape),
            "quantization": None
            if self.scale is None
            else {"scale": self.scale, "zero_point": self.zero_point},
        }


def model_format(path):
    """Return "tflite" or "onnx" from the file name; raise ModelFileError for anything else."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    raise errors.ModelFileError(f"{path}: unknown model format (expected a .tflite or .onnx file)")


def interpreters_for(path):
    """The names of the backends that can run the model file at `path` (by its format), in preference order."""
    return tuple(TFLITE_INTERPRETERS if model_format(path) == "tflite" else ONNX_RUNTIMES)


def available_backends():
    """Return the names of the backends whose modules can be found, without importing them."""
    import importlib.util  # here, not at the top: `predict` never needs it, and it costs its start ~0.6 ms

    found = []
    for name, (module, _extra) in {**TFLITE_INTERPRETERS, **ONNX_RUNTIMES}.items():
        try:
            if importlib.util.find_spec(module.split(".")[0]) is not None:
                found.append(name)
        except (ImportError, ValueError):
            pass
    return found


def open_backend(path, backend=None, threads=None):
    """Open the model at `path` with the named backend, or the first installed one for its format.

    Takes: a .tflite or .onnx path; `backend` one of BACKEND_NAMES or None for automatic choice;
    `threads` the number of CPU threads the interpreter may use (None: the interpreter's default).
    Returns: a TFLiteBackend or OnnxBackend. Raises: ModelFileError for a missing, empty or corrupt
    file; BackendUnavailableError when no suitable interpreter is installed (naming the extra).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise errors.ModelFileError(f"{path}: is a directory, not a model file (give the .tflite or .onnx file in it)")
    kind = model_format(path)
    check_model_file(path, kind)
    candidates = TFLITE_INTERPRETERS if kind == "tflite" else ONNX_RUNTIMES
    if backend is not None:
        if backend not in candidates:
            raise errors.BackendUnavailableError(
                f"{path}: backend {backend!r} cannot run .{kind} models (choose from {', '.join(candidates)})"
            )
        candidates = {backend: candidates[backend]}
    for name, (module_name, _extra) in candidates.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if kind == "tflite":
            return TFLiteBackend(path, name, module, threads)
        return OnnxBackend(path, module, threads)
    extras = " or ".join(f"'pip install {extra}'" for _module, extra in candidates.values())
    raise errors.BackendUnavailableError(f"{path}: no interpreter for .{kind} models is installed; {extras}")


def check_model_file(path, kind):
    """Refuse a missing, unreadable, empty or obviously wrong file before an interpreter sees it."""
    if os.path.isdir(path):
        raise errors.ModelFileError(f"{path}: is a directory, not a model file")
    if os.path.exists(path) and not os.path.isfile(path):
        raise errors.ModelFileError(f"{path}: not a regular file (a device, FIFO or socket), not a model")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise errors.ModelFileError(f"{path}: no such model file") from None
    except OSError as error:
        raise errors.ModelFileError(f"{path}: cannot read: {error.strerror or error}") from None
    if not head:
        raise errors.ModelFileError(f"{path}: model file is empty")
    # A TFLite flatbuffer carries its file identifier at bytes 4..8.
    if kind == "tflite" and head[4:8] != TFLITE_IDENTIFIER:
        raise errors.ModelFileError(f"{path}: not a TFLite model (no TFL3 identifier)")


class TFLiteBackend(ModelFile):
    """A .tflite model in LiteRT, tflite-runtime or TensorFlow Lite; resizes to each batch size."""

    format = "tflite"

    def __init__(self, path, name, module, threads):
        self.location = os.fspath(path)
        self.name = name
        options = {}
        if tflite_kernels() == "reference" and hasattr(module, "OpResolverType"):
            options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
        try:
            self.interpreter = module.Interpreter(model_path=self.location, num_threads=threads, **options)
            # The first allocation applies XNNPACK, which announces itself on the process's stderr
            # ("INFO: Created TensorFlow Lite XNNPACK delegate"): kept out of the user's output.
            without_native_stderr(self.interpreter.allocate_tensors)
        except (ValueError, RuntimeError) as error:
            raise errors.ModelFileError(f"{self.location}: corrupt or unsupported TFLite model: {first_line(error)}") from None
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        self._batch_size = int(self._input["shape"][0])

    @property
    def input(self):
        return tensor_info(self._input)

    @property
    def output(self):
        return tensor_info(self._output)

    def run(self, batch):
        """Run one batch (already in the input dtype); return the raw output array (a copy)."""
        if batch.shape[0] != self._batch_size:
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch_size = batch.shape[0]
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])


def without_native_stderr(function):
    """Call `function()` with file descriptor 2 pointed at /dev/null, so that what native code
    prints there stays out of the user's output; Python exceptions still propagate with their message.
    MNIST_EDGE_NATIVE_LOG=1 lets it through."""
    import os
    import sys

    if os.environ.get("MNIST_EDGE_NATIVE_LOG"):  # wanted, e.g. to see that XNNPACK is active
        return function()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        sink = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(sink, 2)
            try:
                return function()
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(sink)
    finally:
        os.close(saved)


def tflite_kernels():
    """The TFLite kernels asked for in MNIST_EDGE_TFLITE_KERNELS: "default" (unset) or "reference".

    Raises: BackendUnavailableError for any other value.
    """
    choice = os.environ.get(KERNELS_ENVIRONMENT_VARIABLE) or "default"
    if choice not in KERNELS:
        raise errors.BackendUnavailableError(
            f"{KERNELS_ENVIRONMENT_VARIABLE}={choice!r}: choose from {', '.join(KERNELS)}")
    return choice


def tensor_info(details):
    """Turn a TFLite tensor-details dict into a TensorInfo."""
    scale, zero_point = details["quantization"]
    quantized = np.issubdtype(details["dtype"], np.integer) and scale > 0
    return TensorInfo(
        name=details["name"],
        dtype=np.dtype(details["dtype"]),
        shape=tuple(int(size) for size in details["shape"]),
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


ONNX_TYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


class OnnxBackend(ModelFile):
    """A .onnx model in onnxruntime on the CPU. Quantized ONNX models here keep float I/O (QDQ)."""

    format = "onnx"
    name = "onnxruntime"

    def __init__(self, path, onnxruntime, threads):
        self.location = os.fspath(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                self.location, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except onnx_load_errors(onnxruntime) as error:
            raise errors.ModelFileError(f"{self.location}: corrupt or unsupported ONNX model: {first_line(error)}") from None
        (self._input,) = self.session.get_inputs()
        (self._output,) = self.session.get_outputs()

    @property
    def input(self):
        return onnx_tensor_info(self._input)

    @property
    def output(self):
        return onnx_tensor_info(self._output)

    def run(self, batch):
        """Run one batch; return the raw output array."""
        return self.session.run([self._output.name], {self._input.name: batch})[0]


def onnx_load_errors(onnxruntime):
    """The exception classes onnxruntime raises for a file it cannot load (they derive from Exception alone)."""
    state = onnxruntime.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "NotImplemented",
             "RuntimeException")
    return (RuntimeError, ValueError, *(getattr(state, name) for name in names if hasattr(state, name)))


def onnx_tensor_info(node):
    """Turn an onnxruntime NodeArg into a TensorInfo (dynamic dimensions become -1)."""
    return TensorInfo(
        name=node.name,
        dtype=np.dtype(ONNX_TYPES.get(node.type, np.float32)),
        shape=tuple(size if isinstance(size, int) else -1 for size in node.shape),
        scale=None,
        zero_point=None,
    )


def first_line(error):
    """The first line of an exception's message, for one-line error reports."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
