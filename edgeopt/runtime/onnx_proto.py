"""A minimal ONNX protobuf writer and reader, so the runtime half needs neither ``onnx`` nor torch.

The writer builds the few graphs edgeopt makes itself (calibration micro-models, test fixtures);
the reader pulls what ``bench`` reports about any model (initializer sizes, opsets, metadata) and
rejects files that are not a ModelProto before onnxruntime sees them. Field numbers follow
onnx/onnx.proto3; only what is used here is implemented.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16, DOUBLE = 1, 2, 3, 6, 7, 9, 10, 11
_NP_TO_ONNX = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float64): DOUBLE,
}
ELEM_SIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


# --------------------------------------------------------------------------- writer
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _int(field_no: int, value: int) -> bytes:
    return _key(field_no, 0) + _varint(value)


def _bytes(field_no: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _key(field_no, 2) + _varint(len(value)) + value


def _packed(field_no: int, values: Iterable[int]) -> bytes:
    return _bytes(field_no, b"".join(_varint(v) for v in values))


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto with raw little-endian data."""
    array = np.ascontiguousarray(array)
    data_type = _NP_TO_ONNX[array.dtype]
    return (
        _packed(1, array.shape)
        + _int(2, data_type)
        + _bytes(8, name)
        + _bytes(9, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    )


def value_info(name: str, elem_type: int, shape: Sequence[int | str | None]) -> bytes:
    dims = b""
    for d in shape:
        if isinstance(d, str):
            dims += _bytes(1, _bytes(2, d))
        elif d is None:
            dims += _bytes(1, b"")
        else:
            dims += _bytes(1, _int(1, int(d)))
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def attribute(name: str, value: Any) -> bytes:
    if isinstance(value, float):
        return _bytes(1, name) + _key(2, 5) + struct.pack("<f", value) + _int(20, 1)
    if isinstance(value, (bool, int)):
        return _bytes(1, name) + _int(3, int(value)) + _int(20, 2)
    if isinstance(value, str):
        return _bytes(1, name) + _bytes(4, value) + _int(20, 3)
    if isinstance(value, np.ndarray):
        return _bytes(1, name) + _bytes(5, tensor("", value)) + _int(20, 4)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return _bytes(1, name) + _packed(8, value) + _int(20, 7)
    if isinstance(value, (list, tuple)):
        floats = b"".join(struct.pack("<f", float(v)) for v in value)
        return _bytes(1, name) + _bytes(7, floats) + _int(20, 6)
    raise TypeError(f"unsupported attribute {name}={value!r}")


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", **attrs: Any) -> bytes:
    out = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    out += _bytes(3, name or f"{op_type}_{outputs[0]}") + _bytes(4, op_type)
    out += b"".join(_bytes(5, attribute(k, v)) for k, v in attrs.items())
    return out


@dataclass
class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; ``to_bytes`` returns a ModelProto."""

    name: str = "graph"
    nodes: list[bytes] = field(default_factory=list)
    initializers: list[bytes] = field(default_factory=list)
    inputs: list[bytes] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)
    _count: int = 0

    def fresh(self, prefix: str = "t") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, name: str, shape: Sequence[int | str | None], elem_type: int = FLOAT) -> str:
        self.inputs.append(value_info(name, elem_type, shape))
        return name

    def output(self, name: str, shape: Sequence[int | str | None], elem_type: int = FLOAT) -> str:
        self.outputs.append(value_info(name, elem_type, shape))
        return name

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.initializers.append(tensor(name, array))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(node(op_type, inputs, [out], **attrs))
        return out

    def to_bytes(self, *, opset: int = 17, metadata: dict[str, str] | None = None) -> bytes:
        graph = b"".join(_bytes(1, n) for n in self.nodes) + _bytes(2, self.name)
        graph += b"".join(_bytes(5, t) for t in self.initializers)
        graph += b"".join(_bytes(11, v) for v in self.inputs)
        graph += b"".join(_bytes(12, v) for v in self.outputs)
        model = _int(1, 8) + _bytes(2, "edgeopt") + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, opset))
        for k, v in (metadata or {}).items():
            model += _bytes(14, _bytes(1, k) + _bytes(2, v))
        return model

    def save(self, path: str | Path, **kwargs: Any) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes(**kwargs))
        return path


# --------------------------------------------------------------------------- reader
class ProtoError(ValueError):
    pass


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def _fields(buf: memoryview) -> Iterable[tuple[int, int, Any]]:
    """Yield (field, wire type, value) where value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ProtoError("truncated fixed64")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ProtoError(f"truncated field {field_no}: needs {length} bytes, {len(buf) - pos} left")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ProtoError("truncated fixed32")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        yield field_no, wire, value


@dataclass(frozen=True)
class ModelSummary:
    """What bench reports about a model file, read without onnx or onnxruntime."""

    ir_version: int
    opsets: dict[str, int]
    producer: str
    params: int
    initializer_bytes: int
    nodes: int
    metadata: dict[str, str]


def summarize(data: bytes) -> ModelSummary:
    """Parse a ModelProto enough to count parameters; ProtoError if it is not one."""
    buf = memoryview(data)
    ir_version, producer, graph, opsets, metadata = None, "", None, {}, {}
    for f, wire, v in _fields(buf):
        if f == 1 and wire == 0:
            ir_version = v
        elif f == 2 and wire == 2:
            producer = bytes(v).decode("utf-8", "replace")
        elif f == 7 and wire == 2:
            graph = v
        elif f == 8 and wire == 2:
            domain, version = "", 0
            for g, w, x in _fields(v):
                if g == 1 and w == 2:
                    domain = bytes(x).decode("utf-8", "replace")
                elif g == 2 and w == 0:
                    version = x
            opsets[domain or "ai.onnx"] = version
        elif f == 14 and wire == 2:
            kv = {g: bytes(x).decode("utf-8", "replace") for g, w, x in _fields(v) if w == 2}
            metadata[kv.get(1, "")] = kv.get(2, "")
    if ir_version is None or graph is None:
        raise ProtoError("no ir_version or graph: not an ONNX ModelProto")
    params = init_bytes = nodes = 0
    for f, wire, v in _fields(graph):
        if f == 1 and wire == 2:
            nodes += 1
        elif f == 5 and wire == 2:
            dims: list[int] = []
            data_type = 1
            for g, w, x in _fields(v):
                if g == 1 and w == 0:
                    dims.append(x)
                elif g == 1 and w == 2:
                    pos = 0
                    while pos < len(x):
                        d, pos = _read_varint(x, pos)
                        dims.append(d)
                elif g == 2 and w == 0:
                    data_type = x
            n = int(np.prod(dims, dtype=np.int64)) if dims else 1
            params += n
            init_bytes += n * ELEM_SIZE.get(data_type, 4)
    return ModelSummary(ir_version, opsets, producer, params, init_bytes, nodes, metadata)
