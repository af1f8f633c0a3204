"""The external-data files an ONNX model names, read from its protobuf bytes without the onnx
package (whose import costs about 0.6 s, most of it ml_dtypes): opening a package to run it
needs only this. The C++ twin is cpp/runtime/src/onnx_scan.cc; both read the same fields.

    locations = external_data_locations(Path("model.onnx").read_bytes())   # ["model.onnx.data"]

Every tensor of the main graph (initializers, sparse initializers, tensor attributes and, in
subgraphs, theirs) and of model-local functions is looked at; a tensor's ``external_data``
entry ``location`` is what it names. Payloads (weights) are skipped, never copied.
"""

from __future__ import annotations

MAX_DEPTH = 64  # nested subgraphs (If/Loop/Scan bodies)

# ONNX field numbers (onnx.proto3)
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
NODE_ATTRIBUTE = 5
ATTR_TENSOR, ATTR_GRAPH, ATTR_TENSORS, ATTR_GRAPHS, ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
TENSOR_EXTERNAL_DATA = 13
ENTRY_KEY, ENTRY_VALUE = 1, 2
SPARSE_VALUES, SPARSE_INDICES = 1, 2
FUNCTION_NODE = 7
LENGTH_DELIMITED = 2


class MalformedProtobuf(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while shift < 64:
        if pos >= end:
            raise MalformedProtobuf("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise MalformedProtobuf("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int):
    """(field number, start, end) of each length-delimited field in buf[start:end]; other wire types are skipped."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == LENGTH_DELIMITED:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise MalformedProtobuf("a field runs past its message")
            yield number, pos, pos + size
            pos += size
            continue
        else:
            raise MalformedProtobuf(f"unsupported wire type {wire}")
        if pos > end:
            raise MalformedProtobuf("a field runs past its message")


def _tensor(buf: memoryview, start: int, end: int, out: list[str]) -> None:
    for number, s, e in _fields(buf, start, end):
        if number != TENSOR_EXTERNAL_DATA:
            continue
        key = value = None
        for n, ks, ke in _fields(buf, s, e):
            if n == ENTRY_KEY:
                key = bytes(buf[ks:ke]).decode("utf-8", "replace")
            elif n == ENTRY_VALUE:
                value = bytes(buf[ks:ke]).decode("utf-8", "replace")
        if key == "location":
            out.append(value or "")


def _sparse(buf: memoryview, start: int, end: int, out: list[str]) -> None:
    for number, s, e in _fields(buf, start, end):
        if number in (SPARSE_VALUES, SPARSE_INDICES):
            _tensor(buf, s, e, out)


def _node(buf: memoryview, start: int, end: int, out: list[str], depth: int) -> None:
    for number, s, e in _fields(buf, start, end):
        if number != NODE_ATTRIBUTE:
            continue
        for n, as_, ae in _fields(buf, s, e):
            if n in (ATTR_TENSOR, ATTR_TENSORS):
                _tensor(buf, as_, ae, out)
            elif n in (ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS):
                _sparse(buf, as_, ae, out)
            elif n in (ATTR_GRAPH, ATTR_GRAPHS):
                _graph(buf, as_, ae, out, depth + 1)


def _graph(buf: memoryview, start: int, end: int, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MalformedProtobuf(f"subgraphs nest deeper than {MAX_DEPTH} levels")
    for number, s, e in _fields(buf, start, end):
        if number == GRAPH_INITIALIZER:
            _tensor(buf, s, e, out)
        elif number == GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, s, e, out)
        elif number == GRAPH_NODE:
            _node(buf, s, e, out, depth)


def external_data_locations(model_bytes: bytes) -> list[str]:
    """Every ``location`` an ONNX model's tensors name (in file order, repeats kept)."""
    buf = memoryview(model_bytes)
    out: list[str] = []
    for number, s, e in _fields(buf, 0, len(buf)):
        if number == MODEL_GRAPH:
            _graph(buf, s, e, out, 0)
        elif number == MODEL_FUNCTIONS:
            for n, ns, ne in _fields(buf, s, e):
                if n == FUNCTION_NODE:
                    _node(buf, ns, ne, out, 0)
    return out
