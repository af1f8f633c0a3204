"""What the Python-backend model does inside Triton, without Triton: one memx StreamPool; a
live sequence (Triton's correlation id) is a memx stream of R rows (R pool streams: a client's
``stream(R)``), and every row of every request of one ``execute`` call is stepped in one
batched pool call. Triton's sequence batcher delivers a sequence's requests in order, one at a
time; START opens (or restarts) a sequence, END closes it after its step, and a sequence idle
past the timeout is released here too (Triton does not tell the model). A request's rows carry
their own lengths and resets, like a local ``stream.step(tokens, lengths, reset)``.

Requests may also carry a command instead of a segment: ``snapshot`` (the sequence's state
as memx snapshot bytes, which restore in a local Stream or on another server), ``restore``
(a new or running sequence continues from snapshot bytes) and ``end`` (close without a
step). A request that fails gets its own typed error; the others in the call still run.

With a snapshot store (a directory), every sequence's state is written there after each
request that changed it (memx snapshot bytes, replaced atomically) and removed at its end; a
request with START and the command ``resume`` continues a sequence from the store, so a
sequence outlives a server restart or its idle timeout (memx's client resumes by itself).

    server = SequenceServer(runtimes.open(pkg), max_batch=8, idle_timeout_s=60)
    replies = server.handle([Request(corrid=7, start=True, tokens=ids)])   # ids (R, S)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memx.errors import BatchMismatchError, InputError, MemxError, SequenceError
from memx.package import snapshot as snap

COMMANDS = ("step", "snapshot", "restore", "end", "resume")
ERROR_TRAILER = " [memx-error "  # + JSON + "]": the error's fields, for the client to rebuild it


@dataclass
class Request:
    corrid: int
    tokens: np.ndarray | None = None  # (R, S) int64: the sequence's R rows (a 1-D (S,) is one row)
    start: bool = False
    end: bool = False
    ready: bool = True  # False: a filler slot of the direct strategy (answered, not run)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # extra step inputs, (R, ...) each
    lengths: np.ndarray | None = None  # (R,) real tokens per row (default: S)
    reset: np.ndarray | None = None  # (R,) bool: rows that start anew at this step
    command: str = "step"  # "resume": START from the snapshot store, then step
    snapshot: bytes | None = None  # for "restore"


@dataclass
class Reply:
    outputs: dict[str, Any] = field(default_factory=dict)  # output name -> (R, ...) array, zero past each row's length (or bytes)
    error: MemxError | None = None


def error_text(e: MemxError) -> str:
    """How a typed error crosses the wire: its memx type name first and its text (what any
    Triton client shows), then its fields as JSON, so memx's client raises the same error."""
    fields = {"message": getattr(e, "message", str(e)), "expected": e.expected, "actual": e.actual, "hint": e.hint}
    return f"{type(e).__name__}: {e}{ERROR_TRAILER}{json.dumps(fields, default=str)}]"


class SnapshotStore:
    """Sequences' states on disk: ``DIR/<correlation id>.snap``, memx snapshot bytes, each
    replaced atomically (a crash leaves the previous state, never half a file)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, corrid: int) -> Path:
        return self.root / f"{int(corrid)}.snap"

    def put(self, corrid: int, blob: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{int(corrid)}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.path(corrid))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, corrid: int) -> bytes | None:
        try:
            return self.path(corrid).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, corrid: int) -> None:
        self.path(corrid).unlink(missing_ok=True)

    def expire(self, ttl_s: float, *, keep: set[int], now: float | None = None) -> list[int]:
        """Remove stored sequences untouched for ``ttl_s`` seconds (clients that never came back),
        except those in ``keep`` (live here); returns their correlation ids."""
        now = time.time() if now is None else now
        gone = []
        for path in self.root.glob("*.snap"):
            try:
                corrid = int(path.stem)
                old = now - path.stat().st_mtime > ttl_s
            except (ValueError, FileNotFoundError):
                continue  # not a sequence's file, or removed meanwhile
            if old and corrid not in keep:
                path.unlink(missing_ok=True)
                gone.append(corrid)
        return gone


class SequenceServer:
    def __init__(self, runtime: Any, *, max_batch: int = 64, idle_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 store: str | Path | None = None, store_ttl_s: float | None = None):
        self.runtime = runtime
        self.store = SnapshotStore(store) if store else None
        self.store_ttl_s = store_ttl_s  # stored sequences untouched this long are removed (None: kept until their END)
        self._next_expiry = 0.0
        self.pool = runtime.pool(max_batch)
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.streams: dict[int, list[int]] = {}  # correlation id -> its rows' pool stream ids
        self.segments: dict[int, int] = {}  # correlation id -> steps since its start (a local Stream's ``segments``)
        self.last_seen: dict[int, float] = {}
        m = runtime.manifest
        # extra inputs' segment axis within a row (cut to the row's length like its tokens)
        self.segment_axes = {i.name: i.shape.index("segment") - 1 for i in m.inputs if "segment" in i.shape}
        self.outputs = {o.name: o for o in m.outputs}
        self.pads = {i.name: i.pad for i in m.inputs}

    def handle(self, requests: list[Request]) -> list[Reply]:
        """One reply per request, in order."""
        self.release_idle()
        replies = [Reply() for _ in requests]
        stepping: dict[int, list[int]] = {}  # request index -> the rows (pool stream ids) it steps
        for i, req in enumerate(requests):
            if not req.ready:
                continue
            try:
                rows = self._prepare(req, replies[i])
            except MemxError as e:
                replies[i].error = e
                continue
            self.last_seen[req.corrid] = self.clock()
            if rows is not None:
                stepping[i] = rows
        self._step(requests, replies, stepping)
        for i, req in enumerate(requests):
            if not req.ready:
                continue
            if req.end:
                self.close(req.corrid, forget=True)
            elif self.store is not None and replies[i].error is None and req.command in ("step", "restore", "resume") and req.corrid in self.streams:
                self.store.put(req.corrid, self.snapshot(req.corrid))
        return replies

    def _open(self, corrid: int, rows: int) -> list[int]:
        """The sequence (re)started with ``rows`` rows from the learned initial state."""
        sids = self.streams.get(corrid)
        if sids is not None and len(sids) == rows:
            for sid in sids:
                self.pool.reset(sid)
        else:
            self.close(corrid)
            sids = [self.pool.open() for _ in range(rows)]
        self.streams[corrid], self.segments[corrid] = sids, 0
        return sids

    def _prepare(self, req: Request, reply: Reply) -> list[int] | None:
        """Open/restart the sequence and run a command; the rows to step, or None."""
        if req.command not in COMMANDS:
            raise SequenceError("unknown memx command", expected=list(COMMANDS), actual=req.command)
        if req.command == "resume":
            blob = self.store.get(req.corrid) if self.store is not None else None
            if blob is None:
                raise SequenceError(f"sequence {req.corrid} is not in this server's snapshot store", expected="a sequence stepped on a server with a snapshot store",
                                    actual="no store" if self.store is None else "not stored (ended, or never stepped)", hint="start it again")
            self.restore(req.corrid, blob)
            return self.streams[req.corrid]
        if req.command == "restore":
            if req.snapshot is None:
                raise SequenceError("restore needs snapshot bytes", expected="MEMX_SNAPSHOT", actual="none")
            if req.corrid not in self.streams and not req.start:
                self._unknown(req.corrid)
            self.restore(req.corrid, req.snapshot)
            return None
        if req.start:
            self._open(req.corrid, _rows(req.tokens) if req.tokens is not None and req.tokens.size else len(self.streams.get(req.corrid, [0])))
        if req.corrid not in self.streams:
            self._unknown(req.corrid)
        if req.command == "snapshot":
            reply.outputs["MEMX_SNAPSHOT"] = self.snapshot(req.corrid)
            return None
        if req.command == "end":
            return None
        return self.streams[req.corrid]

    def _unknown(self, corrid: int) -> None:
        raise SequenceError(f"sequence {corrid} is not live on this server", expected="a sequence started with START (and not ended or idle past its timeout)",
                            actual="unknown correlation id", hint="start it again, or restore it from a snapshot")

    def snapshot(self, corrid: int) -> bytes:
        """The sequence's rows as one memx snapshot (batch R): the bytes a local Stream(R) writes."""
        parts = [snap.decode(self.pool.snapshot(sid)) for sid in self.streams[corrid]]
        states = {k: np.concatenate([p.states[k] for p in parts]) for k in parts[0].states}
        pending = np.concatenate([p.pending_reset for p in parts])
        return snap.encode(snap.SnapshotData(parts[0].model_id, states, pending, self.segments[corrid]))

    def restore(self, corrid: int, blob: bytes) -> None:
        """Continue (or start) the sequence from snapshot bytes of any batch R (its rows become
        the snapshot's). All or nothing: a refused snapshot leaves the sequence as it was."""
        data = snap.decode_checked(blob, model_id=self.runtime.model_id, batch=None, schema=self.runtime.state_schema)  # refuse before anything changes
        rows = int(data.pending_reset.shape[0])
        before = self.snapshot(corrid) if corrid in self.streams else None
        sids = self._open(corrid, rows)
        try:
            for r, sid in enumerate(sids):
                row = snap.SnapshotData(data.model_id, {k: v[r : r + 1] for k, v in data.states.items()}, data.pending_reset[r : r + 1], data.segments)
                self.pool.restore(sid, snap.encode(row))
        except MemxError:
            if before is None:
                self.close(corrid)
            else:
                self.restore(corrid, before)
            raise
        self.segments[corrid] = data.segments

    def _rows_of(self, req: Request, sids: list[int]) -> dict[str, Any]:
        """A request's rows, checked against its sequence: tokens (R, S), lengths (R,), reset (R,), extra inputs (R, ...)."""
        tokens = np.asarray(req.tokens)
        tokens = tokens if tokens.ndim == 2 else tokens.reshape(1, -1)
        if len(sids) != tokens.shape[0]:
            raise BatchMismatchError("a request carries as many rows as its sequence has", expected=len(sids), actual=int(tokens.shape[0]),
                                     hint="START the sequence again to change its rows")
        width = tokens.shape[1]
        lengths = np.full(len(sids), width, np.int64) if req.lengths is None else np.asarray(req.lengths).reshape(-1)
        if lengths.shape[0] != len(sids) or (lengths.size and (lengths.min() < 0 or lengths.max() > width)):
            raise BatchMismatchError("lengths must give each row's real tokens", expected=f"{len(sids)} values in 0..{width}", actual=lengths.tolist())
        reset = np.zeros(len(sids), bool) if req.reset is None else np.asarray(req.reset, dtype=bool).reshape(-1)
        if reset.shape[0] != len(sids):
            raise BatchMismatchError("reset must flag each row", expected=len(sids), actual=int(reset.shape[0]))
        return {"tokens": tokens, "lengths": lengths, "reset": reset, **{k: np.asarray(v) for k, v in req.inputs.items()}}

    def _padded(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Several requests' rows as one batch: tokens (and extra inputs along the segment) padded to the widest."""
        width = max(p["tokens"].shape[1] for p in parts)
        if any(p.keys() != parts[0].keys() for p in parts):
            raise InputError("requests of one batch give different extra inputs", expected=sorted(parts[0]), actual=[sorted(p) for p in parts])
        out: dict[str, Any] = {}
        for key in parts[0]:
            arrays = [p[key] for p in parts]
            axis = 1 if key == "tokens" else (self.segment_axes[key] + 1 if key in self.segment_axes else None)
            if axis is not None:
                arrays = [_pad_to(a, axis, width, self.pads.get(key, 0)) for a in arrays]
            out[key] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return out

    def _step(self, requests: list[Request], replies: list[Reply], stepping: dict[int, list[int]]) -> None:
        """Every row of every stepping request in one batched pool call; if it fails, each request
        alone (so only a bad request fails, and its sequence's state is unchanged)."""
        parts: dict[int, dict[str, Any]] = {}
        for i, sids in stepping.items():
            try:
                parts[i] = self._rows_of(requests[i], sids)
            except MemxError as e:
                replies[i].error = e
        if not parts:
            return
        order = list(parts)
        try:
            batch = self._padded([parts[i] for i in order])
            out = self.pool.step_rows([sid for i in order for sid in stepping[i]], **batch)
        except (MemxError, ValueError, IndexError):  # a request whose inputs do not stack with the others' (numpy's errors): each alone says which
            out = None
        start = 0
        for i in order:
            rows = len(stepping[i])
            try:
                got = {k: v[start : start + rows] for k, v in out.items()} if out is not None else self.pool.step_rows(stepping[i], **parts[i])
            except MemxError as e:
                replies[i].error = e
                continue
            finally:
                start += rows
            width = parts[i]["tokens"].shape[1]
            replies[i].outputs.update({k: _cut_to(v, self.outputs[k].segment_axis, width) for k, v in got.items()})
            self.segments[requests[i].corrid] += 1

    def close(self, corrid: int, *, forget: bool = False) -> None:
        """Free a sequence's rows; ``forget``: its stored state too (its end)."""
        for sid in self.streams.pop(corrid, []):
            self.pool.close(sid)
        self.segments.pop(corrid, None)
        self.last_seen.pop(corrid, None)
        if forget and self.store is not None:
            self.store.remove(corrid)

    def release_idle(self) -> None:
        """Close sequences idle past the timeout (Triton forgets them without telling the model);
        with a store TTL, remove stored sequences untouched that long (checked at most once a minute)."""
        now = self.clock()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_timeout_s]:
            self.close(corrid)
        if self.store is not None and self.store_ttl_s is not None and now >= self._next_expiry:
            self._next_expiry = now + min(60.0, self.store_ttl_s)
            self.store.expire(self.store_ttl_s, keep=set(self.streams))


def _rows(tokens: np.ndarray) -> int:
    return int(tokens.shape[0]) if tokens.ndim == 2 else 1


def _pad_to(a: np.ndarray, axis: int, width: int, pad: float) -> np.ndarray:
    """``a`` padded with ``pad`` along ``axis`` to ``width``."""
    if a.shape[axis] == width:
        return a
    shape = list(a.shape)
    shape[axis] = width
    out = np.full(shape, pad, dtype=a.dtype)
    out[(slice(None),) * axis + (slice(0, a.shape[axis]),)] = a
    return out


def _cut_to(a: np.ndarray, segment_axis: int | None, width: int) -> np.ndarray:
    """An output of the padded batch back at its request's width (zero past each row's length already)."""
    if segment_axis is None or a.shape[segment_axis] == width:
        return a
    return a[(slice(None),) * segment_axis + (slice(0, width),)]
