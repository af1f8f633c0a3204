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

from memx.errors import BatchMismatchError, MemxError, SequenceError
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


class SequenceServer:
    def __init__(self, runtime: Any, *, max_batch: int = 64, idle_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 store: str | Path | None = None):
        self.runtime = runtime
        self.store = SnapshotStore(store) if store else None
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
        rt = self.runtime
        data = snap.decode(blob)
        rows = int(data.pending_reset.shape[0])
        snap.decode_checked(blob, model_id=rt.model_id, batch=rows, schema=rt.state_schema)  # refuse before anything changes
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

    def _row_inputs(self, req: Request, sids: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """Each row of a request as a pool input: its tokens and extra inputs cut to its length."""
        tokens = req.tokens if req.tokens.ndim == 2 else req.tokens[None]
        if len(sids) != tokens.shape[0]:
            raise BatchMismatchError("a request carries as many rows as its sequence has", expected=len(sids), actual=int(tokens.shape[0]),
                                     hint="START the sequence again to change its rows")
        lengths = np.full(len(sids), tokens.shape[1]) if req.lengths is None else np.asarray(req.lengths).reshape(-1)
        if lengths.shape[0] != len(sids) or (lengths.size and (lengths.min() < 0 or lengths.max() > tokens.shape[1])):
            raise BatchMismatchError("lengths must give each row's real tokens", expected=f"{len(sids)} values in 0..{tokens.shape[1]}", actual=lengths.tolist())
        out: dict[int, dict[str, np.ndarray]] = {}
        for r, sid in enumerate(sids):
            n = int(lengths[r])
            row = {"tokens": tokens[r, :n]}
            for name, value in req.inputs.items():
                x = np.asarray(value)[r] if np.ndim(value) else np.asarray(value)
                axis = self.segment_axes.get(name)
                row[name] = x[(slice(None),) * axis + (slice(0, n),)] if axis is not None else x
            out[sid] = row
        return out

    def _step(self, requests: list[Request], replies: list[Reply], stepping: dict[int, list[int]]) -> None:
        """Every row of every stepping request in one pool call; if it fails, each request alone
        (so only a bad request fails, and its sequence's state is unchanged)."""
        if not stepping:
            return
        batch: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        resets: dict[int, dict[int, bytes]] = {}
        for i, sids in stepping.items():
            try:
                batch[i] = self._row_inputs(requests[i], sids)
                resets[i] = self._reset_rows(requests[i], sids)
            except MemxError as e:
                batch.pop(i, None)
                replies[i].error = e
        try:
            out = self.pool.step({sid: row for rows in batch.values() for sid, row in rows.items()})
        except MemxError:
            out = None
        for i, rows in batch.items():
            try:
                got = out if out is not None else self.pool.step(rows)
            except MemxError as e:
                for sid, blob in resets[i].items():  # the step failed: rows reset for it are as they were
                    self.pool.restore(sid, blob)
                replies[i].error = e
                continue
            replies[i].outputs.update(self._stacked(requests[i], [got[sid] for sid in rows]))
            self.segments[requests[i].corrid] += 1

    def _reset_rows(self, req: Request, sids: list[int]) -> dict[int, bytes]:
        """Start the request's reset rows anew; returns their states before, to put back if the step fails."""
        if req.reset is None:
            return {}
        flags = np.asarray(req.reset, dtype=bool).reshape(-1)
        if flags.shape[0] != len(sids):
            raise BatchMismatchError("reset must flag each row", expected=len(sids), actual=int(flags.shape[0]))
        before = {sid: self.pool.snapshot(sid) for sid, flag in zip(sids, flags) if flag}
        for sid in before:
            self.pool.reset(sid)
        return before

    def _stacked(self, req: Request, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per-row outputs (cut to each row's length) as (R, ...) arrays padded with zeros to the request's width."""
        width = req.tokens.shape[-1]
        out: dict[str, np.ndarray] = {}
        for name, spec in self.outputs.items():
            shape = list(rows[0][name].shape)
            if spec.segment_axis is not None:
                shape[spec.segment_axis - 1] = width
            full = np.zeros((len(rows), *shape), dtype=rows[0][name].dtype)
            for r, row in enumerate(rows):
                x = row[name]
                full[(r, *(slice(0, d) for d in x.shape))] = x
            out[name] = full
        return out

    def close(self, corrid: int, *, forget: bool = False) -> None:
        """Free a sequence's rows; ``forget``: its stored state too (its end)."""
        for sid in self.streams.pop(corrid, []):
            self.pool.close(sid)
        self.segments.pop(corrid, None)
        self.last_seen.pop(corrid, None)
        if forget and self.store is not None:
            self.store.remove(corrid)

    def release_idle(self) -> None:
        """Close sequences idle past the timeout (Triton forgets them without telling the model)."""
        now = self.clock()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_timeout_s]:
            self.close(corrid)


def _rows(tokens: np.ndarray) -> int:
    return int(tokens.shape[0]) if tokens.ndim == 2 else 1
