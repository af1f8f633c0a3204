"""Stream snapshots: versioned, checksummed bytes bound to one model.

Layout (little-endian):

    b"MEMXSNAP" | u16 version | u32 header length | header (UTF-8 JSON) | tensor bytes | sha256 of all before

The header names the model (``model_id`` from the manifest: family, config,
state schema, weights), the batch size, the rows still waiting for their reset
and each state tensor's name, dtype, shape and byte range. The C++ runtime reads
and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from memx.errors import NonFiniteStateError, SnapshotCorruptError, SnapshotMismatchError
from memx.package.limits import MAX_BATCH, MAX_JSON_DEPTH, json_depth, strict_json_loads

MAGIC = b"MEMXSNAP"
VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_DIGEST = 32


@dataclass
class SnapshotData:
    model_id: str
    states: dict[str, np.ndarray]  # name -> (B, ...) array
    pending_reset: np.ndarray  # bool (B,)
    segments: int  # segments stepped since the stream was created


def encode(data: SnapshotData) -> bytes:
    batch = int(data.pending_reset.shape[0])
    tensors, payload, offset = [], [], 0
    for name, arr in data.states.items():
        a = np.ascontiguousarray(arr)
        tensors.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        payload.append(a.tobytes())
        offset += a.nbytes
    header = json.dumps(
        {"model_id": data.model_id, "batch": batch, "pending_reset": [bool(x) for x in data.pending_reset], "segments": int(data.segments), "tensors": tensors},
        sort_keys=True,
    ).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(payload)
    return body + hashlib.sha256(body).digest()


def decode(blob: bytes) -> SnapshotData:
    """Parse and check bytes from :func:`encode`; refuses anything truncated or altered."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SnapshotCorruptError("snapshot must be bytes", expected="bytes", actual=type(blob).__name__)
    blob = bytes(blob)
    if len(blob) < _PREFIX.size + _DIGEST or blob[:8] != MAGIC:
        raise SnapshotCorruptError("not a memx snapshot", expected=f"bytes starting with {MAGIC!r}", actual=f"{len(blob)} bytes starting with {blob[:8]!r}")
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotCorruptError("snapshot checksum mismatch (truncated or altered)", expected=hashlib.sha256(body).hexdigest()[:16], actual=digest.hex()[:16])
    _, version, header_len = _PREFIX.unpack_from(body)
    if version != VERSION:
        raise SnapshotMismatchError("unsupported snapshot version", expected=VERSION, actual=version)
    raw = body[_PREFIX.size : _PREFIX.size + header_len]
    if len(raw) != header_len:
        raise SnapshotCorruptError("snapshot header is truncated", expected=f"{header_len} bytes", actual=f"{len(raw)} bytes")
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise SnapshotCorruptError("snapshot header is nested too deeply", expected=f"at most {MAX_JSON_DEPTH} levels of arrays and objects", actual=depth)
    try:  # strict UTF-8 (no byte-order mark, no UTF-16), as the C++ reader reads it
        header = strict_json_loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise SnapshotCorruptError("snapshot header is not valid JSON") from None
    payload = body[_PREFIX.size + header_len :]
    layouts = check_header(header, len(payload))
    states = {t.name: np.frombuffer(payload, dtype=t.dtype, count=t.count, offset=t.offset).reshape(t.shape).copy() for t in layouts}
    return SnapshotData(header["model_id"], states, np.asarray(header["pending_reset"], dtype=bool).reshape(-1), header["segments"])


# -- header fields: the C++ twin is cpp/runtime/src/snapshot.cc's check_header; the snapshot corpus
#    (tests/data/snapshots) and tests/fuzz hold both to the same verdict on every header


@dataclass(frozen=True)
class TensorLayout:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # (B, ...)
    offset: int
    count: int  # elements


HEADER_KEYS = ("batch", "model_id", "pending_reset", "segments", "tensors")
TENSOR_KEYS = ("dtype", "name", "nbytes", "offset", "shape")
INT64_MAX = (1 << 63) - 1
# numpy descriptors of the dtypes a memx state may have (DTYPES in manifest.py); "=" (native
# order) is read as "<" on the little-endian machines memx runs on
_DESCR = {"<f4": "float32", "<f2": "float16", "<V2": "bfloat16", "<i8": "int64", "<i4": "int32", "|i1": "int8", "|u1": "uint8", "|b1": "bool"}


def check_header(header: Any, payload_size: int) -> list[TensorLayout]:
    """Every header field by type and range (in the order the C++ reader checks them); the
    tensors must tile the payload exactly. SnapshotCorruptError for a malformed header,
    SnapshotMismatchError for a well-formed one holding a dtype no memx state has."""
    if not isinstance(header, dict):
        raise SnapshotCorruptError("snapshot header is not a JSON object", expected="an object", actual=_json_kind(header))
    _exact_keys(header, HEADER_KEYS, "snapshot header")
    _text(header["model_id"], "model_id")
    batch = _integer(header["batch"], "batch", 1, MAX_BATCH)
    pending = header["pending_reset"]
    if not isinstance(pending, list) or len(pending) != batch or not all(isinstance(r, bool) for r in pending):
        raise SnapshotCorruptError("snapshot header field 'pending_reset' is malformed", expected=f"a list of {batch} booleans", actual=_short(pending))
    _integer(header["segments"], "segments", 0, INT64_MAX)
    tensors = header["tensors"]
    if not isinstance(tensors, list):
        raise SnapshotCorruptError("snapshot header field 'tensors' is malformed", expected="a list", actual=_json_kind(tensors))
    layouts: list[TensorLayout] = []
    used = 0
    for i, t in enumerate(tensors):
        layouts.append(_tensor_layout(t, i, batch, used, {x.name for x in layouts}))
        used += layouts[-1].count * layouts[-1].dtype.itemsize
        if used > payload_size:  # the C++ reader stops here too (its sum must not overflow)
            break
    if used != payload_size:
        raise SnapshotCorruptError("snapshot payload length differs from its tensors'", expected=f"{used} bytes", actual=f"{payload_size} bytes")
    return layouts


def _tensor_layout(t: Any, i: int, batch: int, offset: int, seen: set[str]) -> TensorLayout:
    where = f"tensors[{i}]"
    if not isinstance(t, dict):
        raise SnapshotCorruptError(f"snapshot header field '{where}' is malformed", expected="an object", actual=_json_kind(t))
    _exact_keys(t, TENSOR_KEYS, f"snapshot header field '{where}'")
    name = _text(t["name"], f"{where}.name")
    if not name or name in seen:
        raise SnapshotCorruptError(f"snapshot header field '{where}.name' is malformed", expected="a non-empty name no other tensor has", actual=_short(name))
    descr = _text(t["dtype"], f"{where}.dtype")
    shape = t["shape"]
    if not isinstance(shape, list) or not shape:
        raise SnapshotCorruptError(f"snapshot tensor '{name}' shape is malformed", expected="a list of dims, batch first", actual=_short(shape))
    dims = tuple(_integer(d, f"{where}.shape", 0, INT64_MAX) for d in shape)
    if dims[0] != batch:
        raise SnapshotCorruptError(f"snapshot tensor '{name}' shape disagrees with the batch", expected=f"{batch} rows", actual=f"{list(dims)}")
    if _integer(t["offset"], f"{where}.offset", 0, INT64_MAX) != offset:
        raise SnapshotCorruptError(f"snapshot tensor '{name}' does not start where the one before ends", expected=offset, actual=t["offset"])
    nbytes = _integer(t["nbytes"], f"{where}.nbytes", 0, INT64_MAX)
    dtype = _state_dtype(descr, name)
    count = int(np.prod(dims, dtype=object))
    if count * dtype.itemsize != nbytes:
        raise SnapshotCorruptError(f"snapshot tensor '{name}' size does not match its shape", expected=f"{count * dtype.itemsize} bytes", actual=nbytes)
    return TensorLayout(name, dtype, dims, offset, count)


def _state_dtype(descr: str, name: str) -> np.dtype:
    key = "<" + descr[1:] if descr[:1] == "=" and len(descr) == 3 else descr
    if key not in _DESCR:
        raise SnapshotMismatchError(f"snapshot tensor '{name}' has a dtype no memx state has", expected="/".join(_DESCR.values()), actual=descr)
    return numpy_dtype(_DESCR[key])


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype a state of manifest dtype ``name`` is held in (bfloat16: its raw 2 bytes)."""
    return np.dtype("V2") if name == "bfloat16" else np.dtype(name)


def _exact_keys(obj: dict, keys: tuple[str, ...], where: str) -> None:
    missing, unknown = sorted(set(keys) - set(obj)), sorted(set(obj) - set(keys))
    if missing or unknown:
        raise SnapshotCorruptError(f"{where} has the wrong fields", expected=sorted(keys), actual=sorted(obj))


def _text(value: Any, field: str) -> str:
    try:
        if isinstance(value, str):
            value.encode("utf-8")  # a lone surrogate escape is not text (the C++ reader refuses it too)
            return value
    except UnicodeEncodeError:
        pass
    raise SnapshotCorruptError(f"snapshot header field '{field}' is not text", expected="a string", actual=_short(value))


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SnapshotCorruptError(f"snapshot header field '{field}' is out of range", expected=f"an integer in {low}..{high}", actual=_short(value))
    return value


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, float) or np.isfinite(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_compatible(data: SnapshotData, *, model_id: str, batch: int | None, schema: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Refuse a snapshot of another model, batch size or state layout, or with NaN/Inf."""
    if data.model_id != model_id:
        raise SnapshotMismatchError("snapshot belongs to another model", expected=model_id[:16], actual=data.model_id[:16])
    got_batch = int(data.pending_reset.shape[0])
    if batch is not None and got_batch != batch:
        raise SnapshotMismatchError("snapshot batch size differs from the stream's", expected=batch, actual=got_batch)
    if sorted(data.states) != sorted(schema):
        raise SnapshotMismatchError("snapshot state names differ", expected=sorted(schema), actual=sorted(data.states))
    for name, (shape, dtype) in schema.items():
        arr = data.states[name]
        if tuple(arr.shape[1:]) != shape or arr.shape[0] != got_batch or arr.dtype != numpy_dtype(dtype):
            raise SnapshotMismatchError(f"snapshot state {name!r} has the wrong layout", expected=f"{dtype}{[got_batch, *shape]}", actual=f"{arr.dtype}{list(arr.shape)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise NonFiniteStateError(f"snapshot state {name!r} holds NaN/Inf", expected="finite values", actual=f"{arr[tuple(bad)]} at index {bad}")


def decode_checked(blob: bytes, *, model_id: str, batch: int | None, schema: dict[str, tuple[tuple[int, ...], str]]) -> SnapshotData:
    """Decode ``blob`` and refuse it unless it fits this model, batch and state schema."""
    data = decode(blob)
    check_compatible(data, model_id=model_id, batch=batch, schema=schema)
    return data


def state_schema(manifest: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """What a snapshot of this model holds per state: (shape without batch, dtype)."""
    return {s.name: (tuple(int(d) for d in s.shape[1:]), s.dtype) for s in manifest.state}
