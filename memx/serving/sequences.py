"""What the Python-backend model does inside Triton, without Triton: one memx StreamPool, a
stream per live sequence (Triton's correlation id), every request of one ``execute`` call
stepped in one batched pool call. Triton's sequence batcher delivers a sequence's requests
in order, one at a time; START opens (or restarts) a sequence, END closes it after its step,
and a sequence idle past the timeout is released here too (Triton does not tell the model).

Requests may also carry a command instead of a segment: ``snapshot`` (the sequence's state
as memx snapshot bytes, which restore in a local Stream or on another server), ``restore``
(a new or running sequence continues from snapshot bytes) and ``end`` (close without a
step). A request that fails gets its own typed error; the others in the call still run.

    server = SequenceServer(runtimes.open(pkg), max_batch=8, idle_timeout_s=60)
    replies = server.handle([Request(corrid=7, start=True, tokens=ids)])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from memx.errors import MemxError, SequenceError

COMMANDS = ("step", "snapshot", "restore", "end")


@dataclass
class Request:
    corrid: int
    tokens: np.ndarray | None = None  # (S,) int64
    start: bool = False
    end: bool = False
    ready: bool = True  # False: a filler slot of the direct strategy (answered, not run)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # extra step inputs, without the batch axis
    command: str = "step"
    snapshot: bytes | None = None  # for "restore"


@dataclass
class Reply:
    outputs: dict[str, Any] = field(default_factory=dict)  # output name -> array without the batch axis (or bytes)
    error: MemxError | None = None


def error_text(e: MemxError) -> str:
    """How a typed error crosses the wire: its memx type name first, so the client raises the same type."""
    return f"{type(e).__name__}: {e}"


class SequenceServer:
    def __init__(self, runtime: Any, *, max_batch: int = 64, idle_timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
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
            if req.ready and req.end and req.corrid in self.streams:
                self.close(req.corrid)
        return replies

    def _prepare(self, req: Request, reply: Reply) -> int | None:
        """Open/restart the sequence and run a command; the stream to step, or None."""
        if req.command not in COMMANDS:
            raise SequenceError("unknown memx command", expected=list(COMMANDS), actual=req.command)
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

    def close(self, corrid: int) -> None:
        sid = self.streams.pop(corrid, None)
        self.last_seen.pop(corrid, None)
        if sid is not None:
            self.pool.close(sid)

    def release_idle(self) -> None:
        """Close sequences idle past the timeout (Triton forgets them without telling the model)."""
        now = self.clock()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_timeout_s]:
            self.close(corrid)
