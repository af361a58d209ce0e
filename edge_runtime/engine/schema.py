"""Read a .tflite file: a small flatbuffer reader for the part of TFLite's schema an int8 model uses.

The plain install of mnist-edge is numpy alone, so this does not depend on the `flatbuffers` or
`tflite` packages. Field numbers are those of tensorflow/compiler/mlir/lite/schema/schema.fbs.
Every read is bounds-checked: a truncated or corrupt file raises SchemaError, never IndexError or
struct.error.
"""

import struct

import numpy as np

# TensorType values (schema.fbs) this engine can hold in memory.
TENSOR_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8, 10: np.float64}
TENSOR_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                     7: "int16", 8: "complex64", 9: "int8", 10: "float64", 17: "int4"}

# BuiltinOperator names by value, so that a refusal can name any op, not only the supported ones.
BUILTIN_OPERATOR_NAMES = """
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP
FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC
LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX
SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE
BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL
LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT
RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT
UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR
LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK
ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4
NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
""".split()
CUSTOM = 32


class SchemaError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer (truncated, corrupt, or another format)."""


class Table:
    """One flatbuffer table: a position in the buffer and its vtable of field offsets."""

    __slots__ = ("buffer", "position", "vtable", "vtable_size")

    def __init__(self, buffer, position):
        self.buffer = buffer
        self.position = position
        self.vtable = position - buffer.int32(position)
        self.vtable_size = buffer.uint16(self.vtable)
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise SchemaError(f"corrupt table at byte {position}")
        buffer.check(self.vtable, self.vtable_size)

    def field_position(self, field):
        """The absolute position of field number `field`, or None when it is absent (default)."""
        entry = 4 + 2 * field
        if entry >= self.vtable_size:
            return None
        offset = self.buffer.uint16(self.vtable + entry)
        return self.position + offset if offset else None

    def scalar(self, field, kind, default=0):
        position = self.field_position(field)
        return default if position is None else self.buffer.unpack(kind, position)

    def table(self, field):
        position = self.field_position(field)
        return None if position is None else Table(self.buffer, self.buffer.follow(position))

    def vector(self, field):
        """(first element position, length) of a vector field, or None when absent."""
        position = self.field_position(field)
        if position is None:
            return None
        start = self.buffer.follow(position)
        return start + 4, self.buffer.uint32(start)

    def tables(self, field):
        found = self.vector(field)
        if found is None:
            return []
        start, length = found
        self.buffer.check(start, 4 * length)
        return [Table(self.buffer, self.buffer.follow(start + 4 * index)) for index in range(length)]

    def array(self, field, dtype):
        """A numeric vector field as a numpy array (a view into the file), empty when absent."""
        found = self.vector(field)
        if found is None:
            return np.zeros(0, dtype)
        start, length = found
        return self.buffer.array(start, length, dtype)

    def string(self, field):
        found = self.vector(field)
        if found is None:
            return ""
        start, length = found
        self.buffer.check(start, length)
        return bytes(self.buffer.data[start:start + length]).decode("utf-8", "replace")


class Buffer:
    """Bounds-checked little-endian reads from the file's bytes."""

    def __init__(self, data):
        self.data = memoryview(data)
        self.size = len(data)

    def check(self, position, length):
        if position < 0 or length < 0 or position + length > self.size:
            raise SchemaError(f"reference to bytes {position}..{position + length} beyond the end of the "
                              f"{self.size}-byte file (truncated or corrupt)")

    def unpack(self, kind, position):
        self.check(position, struct.calcsize(kind))
        return struct.unpack_from("<" + kind, self.data, position)[0]

    def uint16(self, position):
        return self.unpack("H", position)

    def uint32(self, position):
        return self.unpack("I", position)

    def int32(self, position):
        return self.unpack("i", position)

    def follow(self, position):
        """The position an unsigned offset stored at `position` points to."""
        target = position + self.uint32(position)
        self.check(target, 4)
        return target

    def array(self, start, length, dtype):
        dtype = np.dtype(dtype).newbyteorder("<")
        self.check(start, length * dtype.itemsize)
        return np.frombuffer(self.data, dtype=dtype, count=length, offset=start)


class TensorSpec:
    """What the file says about one tensor: shape, type, constant data, quantization."""

    __slots__ = ("index", "name", "shape", "shape_signature", "type_code", "dtype", "data", "scales",
                 "zero_points", "quantized_dimension")

    @property
    def type_name(self):
        return TENSOR_TYPE_NAMES.get(self.type_code, f"type {self.type_code}")

    @property
    def scale(self):
        """The per-tensor scale as numpy float32 (TFLite keeps scales as C floats), 0 if unquantized."""
        return self.scales[0] if len(self.scales) else np.float32(0.0)

    @property
    def zero_point(self):
        return int(self.zero_points[0]) if len(self.zero_points) else 0


class OperatorSpec:
    """One operator: which builtin, its tensors (−1 for an omitted optional input), its options table."""

    __slots__ = ("index", "code", "name", "inputs", "outputs", "options")


class ModelSpec:
    """The first subgraph of a .tflite model, with constant tensor data attached."""

    __slots__ = ("tensors", "operators", "inputs", "outputs", "subgraph_count")


def operator_name(code, custom_code=""):
    if code == CUSTOM:
        return f"CUSTOM ({custom_code})" if custom_code else "CUSTOM"
    return BUILTIN_OPERATOR_NAMES[code] if 0 <= code < len(BUILTIN_OPERATOR_NAMES) else f"BUILTIN_OPERATOR_{code}"


def read_model(data):
    """Parse a TFLite flatbuffer (bytes). Returns a ModelSpec. Raises SchemaError when malformed."""
    buffer = Buffer(data)
    if buffer.size < 8 or bytes(buffer.data[4:8]) != b"TFL3":
        raise SchemaError("not a TFLite model (no TFL3 identifier)")
    try:
        model = Table(buffer, buffer.follow(0))
        codes = []
        for code_table in model.tables(1):  # Model.operator_codes
            deprecated = code_table.scalar(0, "b")  # OperatorCode.deprecated_builtin_code
            builtin = code_table.scalar(3, "i")  # OperatorCode.builtin_code
            code = max(deprecated, builtin)
            codes.append((code, code_table.string(1) if code == CUSTOM else ""))
        buffers = model.tables(4)  # Model.buffers
        subgraphs = model.tables(2)  # Model.subgraphs
        if not subgraphs:
            raise SchemaError("the model has no subgraph")
        subgraph = subgraphs[0]
        spec = ModelSpec()
        spec.subgraph_count = len(subgraphs)
        spec.tensors = [read_tensor(index, table, buffers, buffer)
                        for index, table in enumerate(subgraph.tables(0))]  # SubGraph.tensors
        spec.inputs = [int(i) for i in subgraph.array(1, np.int32)]
        spec.outputs = [int(i) for i in subgraph.array(2, np.int32)]
        spec.operators = []
        for index, table in enumerate(subgraph.tables(3)):  # SubGraph.operators
            operator = OperatorSpec()
            operator.index = index
            opcode_index = table.scalar(0, "I")
            if opcode_index >= len(codes):
                raise SchemaError(f"operator {index} refers to operator code {opcode_index} of {len(codes)}")
            operator.code, custom = codes[opcode_index]
            operator.name = operator_name(operator.code, custom)
            operator.inputs = [int(i) for i in table.array(1, np.int32)]
            operator.outputs = [int(i) for i in table.array(2, np.int32)]
            operator.options = table.table(4)  # Operator.builtin_options
            spec.operators.append(operator)
    except (struct.error, IndexError, OverflowError, ValueError) as error:
        if isinstance(error, SchemaError):
            raise
        raise SchemaError(f"corrupt flatbuffer: {error}") from None
    count = len(spec.tensors)
    for index in spec.inputs + spec.outputs + [i for op in spec.operators for i in op.inputs + op.outputs]:
        if not -1 <= index < count:
            raise SchemaError(f"reference to tensor {index}, but the model has {count} tensors")
    return spec


def read_tensor(index, table, buffers, buffer):
    tensor = TensorSpec()
    tensor.index = index
    tensor.shape = tuple(int(size) for size in table.array(0, np.int32))  # Tensor.shape
    tensor.type_code = table.scalar(1, "b")  # Tensor.type
    tensor.dtype = TENSOR_TYPES.get(tensor.type_code)
    tensor.name = table.string(3)  # Tensor.name
    signature = table.array(7, np.int32)  # Tensor.shape_signature
    tensor.shape_signature = tuple(int(size) for size in signature) if len(signature) else tensor.shape
    quantization = table.table(4)  # Tensor.quantization
    if quantization is not None:
        tensor.scales = quantization.array(2, np.float32).astype(np.float32)  # QuantizationParameters.scale
        tensor.zero_points = quantization.array(3, np.int64).astype(np.int64)  # .zero_point
        tensor.quantized_dimension = quantization.scalar(6, "i")  # .quantized_dimension
    else:
        tensor.scales = np.zeros(0, np.float32)
        tensor.zero_points = np.zeros(0, np.int64)
        tensor.quantized_dimension = 0
    tensor.data = None
    buffer_index = table.scalar(2, "I")  # Tensor.buffer; buffer 0 is the empty sentinel
    if buffer_index:
        if buffer_index >= len(buffers):
            raise SchemaError(f"tensor {index} refers to buffer {buffer_index} of {len(buffers)}")
        raw = read_buffer(buffers[buffer_index], buffer)
        if raw is not None and tensor.dtype is not None:
            itemsize = np.dtype(tensor.dtype).itemsize
            count = int(np.prod(tensor.shape, dtype=np.int64))
            if len(raw) != count * itemsize:
                raise SchemaError(f"tensor {index} ({tensor.name}) holds {len(raw)} bytes for shape {list(tensor.shape)}")
            tensor.data = np.frombuffer(raw, dtype=np.dtype(tensor.dtype).newbyteorder("<"), count=count).reshape(tensor.shape)
    return tensor


def read_buffer(table, buffer):
    """A Buffer table's bytes (inline, or by offset/size for large models), or None when empty."""
    found = table.vector(0)  # Buffer.data
    if found is not None and found[1]:
        start, length = found
        buffer.check(start, length)
        return buffer.data[start:start + length]
    offset = table.scalar(1, "Q")  # Buffer.offset
    size = table.scalar(2, "Q")  # Buffer.size
    if offset > 1 and size:
        buffer.check(offset, size)
        return buffer.data[offset:offset + size]
    return None
