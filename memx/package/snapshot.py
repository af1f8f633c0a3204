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
from memx.package.limits import MAX_JSON_DEPTH, json_depth

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
    depth = json_depth(body[_PREFIX.size : _PREFIX.size + header_len])
    if depth > MAX_JSON_DEPTH:
        raise SnapshotCorruptError("snapshot header is nested too deeply", expected=f"at most {MAX_JSON_DEPTH} levels of arrays and objects", actual=depth)
    try:
        header = json.loads(body[_PREFIX.size : _PREFIX.size + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SnapshotCorruptError("snapshot header is not valid JSON") from None
    try:
        return _parse_payload(header, body[_PREFIX.size + header_len :])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, SnapshotCorruptError):
            raise
        raise SnapshotCorruptError(f"snapshot header is malformed ({type(e).__name__}: {e})") from None


def _parse_payload(header: dict, payload: bytes) -> SnapshotData:
    states = {}
    for t in header["tensors"]:
        raw = payload[t["offset"] : t["offset"] + t["nbytes"]]
        if len(raw) != t["nbytes"]:
            raise SnapshotCorruptError(f"snapshot tensor {t['name']!r} is truncated", expected=t["nbytes"], actual=len(raw))
        states[t["name"]] = np.frombuffer(raw, dtype=np.dtype(t["dtype"])).reshape(t["shape"]).copy()
    return SnapshotData(str(header["model_id"]), states, np.asarray(header["pending_reset"], dtype=bool).reshape(-1), int(header["segments"]))

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
        if tuple(arr.shape[1:]) != shape or arr.shape[0] != got_batch or arr.dtype != np.dtype(dtype):
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
