"""What the Python-backend model does inside Triton, without Triton: one memx StreamPool, a
stream per live sequence (Triton's correlation id), every request of one ``execute`` call
stepped in one batched pool call. Triton's sequence batcher delivers a sequence's requests
in order, one at a time; START opens (or restarts) a sequence, END closes it after its step,
and a sequence idle past the timeout is released here too (Triton does not tell the model).

Requests may also carry a command instead of a segment: ``snapshot`` (the sequence's state
as memx snapshot bytes, which restore in a local Stream or on another server), ``restore``
(a new or running sequence continues from snapshot bytes) and ``end`` (close without a
step). A request that fails gets its own typed error; the others in the call still run.

With a snapshot store (a directory), every sequence's state is written there after each
request that changed it (memx snapshot bytes, replaced atomically) and removed at its end; a
request with START and the command ``resume`` continues a sequence from the store, so a
sequence outlives a server restart or its idle timeout (memx's client resumes by itself).

    server = SequenceServer(runtimes.open(pkg), max_batch=8, idle_timeout_s=60)
    replies = server.handle([Request(corrid=7, start=True, tokens=ids)])
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

from memx.errors import MemxError, SequenceError

COMMANDS = ("step", "snapshot", "restore", "end", "resume")
ERROR_TRAILER = " [memx-error "  # + JSON + "]": the error's fields, for the client to rebuild it


@dataclass
class Request:
    corrid: int
    tokens: np.ndarray | None = None  # (S,) int64
    start: bool = False
    end: bool = False
    ready: bool = True  # False: a filler slot of the direct strategy (answered, not run)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # extra step inputs, without the batch axis
    command: str = "step"  # "resume": START from the snapshot store, then step
    snapshot: bytes | None = None  # for "restore"


@dataclass
class Reply:
    outputs: dict[str, Any] = field(default_factory=dict)  # output name -> array without the batch axis (or bytes)
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
        self.streams: dict[int, int] = {}  # correlation id -> pool stream id
        self.last_seen: dict[int, float] = {}

    def handle(self, requests: list[Request]) -> list[Reply]:
        """One reply per request, in order."""
        self.release_idle()
        replies = [Reply() for _ in requests]
        stepping: dict[int, int] = {}  # request index -> stream id
        for i, req in enumerate(requests):
            if not req.ready:
                continue
            try:
                sid = self._prepare(req, replies[i])
            except MemxError as e:
                replies[i].error = e
                continue
            self.last_seen[req.corrid] = self.clock()
            if sid is not None:
                stepping[i] = sid
        self._step(requests, replies, stepping)
        for i, req in enumerate(requests):
            if not req.ready:
                continue
            if req.end:
                self.close(req.corrid, forget=True)
            elif self.store is not None and replies[i].error is None and req.command in ("step", "restore", "resume") and req.corrid in self.streams:
                self.store.put(req.corrid, self.pool.snapshot(self.streams[req.corrid]))
        return replies

    def _prepare(self, req: Request, reply: Reply) -> int | None:
        """Open/restart the sequence and run a command; the stream to step, or None."""
        if req.command not in COMMANDS:
            raise SequenceError("unknown memx command", expected=list(COMMANDS), actual=req.command)
        if req.command == "resume":
            blob = self.store.get(req.corrid) if self.store is not None else None
            if blob is None:
                raise SequenceError(f"sequence {req.corrid} is not in this server's snapshot store", expected="a sequence stepped on a server with a snapshot store",
                                    actual="no store" if self.store is None else "not stored (ended, or never stepped)", hint="start it again")
            sid = self.streams[req.corrid] if req.corrid in self.streams else self.pool.open()
            try:
                self.pool.restore(sid, blob)
            except MemxError:
                if req.corrid not in self.streams:
                    self.pool.close(sid)
                raise
            self.streams[req.corrid] = sid
            return sid
        if req.start:
            if req.corrid in self.streams:
                self.pool.reset(self.streams[req.corrid])
            else:
                self.streams[req.corrid] = self.pool.open()
        sid = self.streams.get(req.corrid)
        if sid is None:
            raise SequenceError(f"sequence {req.corrid} is not live on this server", expected="a sequence started with START (and not ended or idle past its timeout)",
                                actual="unknown correlation id", hint="start it again, or restore it from a snapshot")
        if req.command == "snapshot":
            reply.outputs["MEMX_SNAPSHOT"] = self.pool.snapshot(sid)
            return None
        if req.command == "restore":
            if req.snapshot is None:
                raise SequenceError("restore needs snapshot bytes", expected="MEMX_SNAPSHOT", actual="none")
            self.pool.restore(sid, req.snapshot)
            return None
        if req.command == "end":
            return None
        return sid

    def _step(self, requests: list[Request], replies: list[Reply], stepping: dict[int, int]) -> None:
        """All stepped streams in one pool call; if it fails, each alone (so only a bad request fails)."""
        if not stepping:
            return
        batch = {sid: {"tokens": requests[i].tokens, **requests[i].inputs} for i, sid in stepping.items()}
        try:
            out = self.pool.step(batch)
        except MemxError:
            out = None
        for i, sid in stepping.items():
            try:
                replies[i].outputs.update(out[sid] if out is not None else self.pool.step({sid: batch[sid]})[sid])
            except MemxError as e:
                replies[i].error = e

    def close(self, corrid: int, *, forget: bool = False) -> None:
        """Free a sequence's stream; ``forget``: its stored state too (its end)."""
        sid = self.streams.pop(corrid, None)
        self.last_seen.pop(corrid, None)
        if sid is not None:
            self.pool.close(sid)
        if forget and self.store is not None:
            self.store.remove(corrid)

    def release_idle(self) -> None:
        """Close sequences idle past the timeout (Triton forgets them without telling the model)."""
        now = self.clock()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_timeout_s]:
            self.close(corrid)
