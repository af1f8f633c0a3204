"""A served model with the Stream API: change one line to move a stream from this process to
a Triton server.

    model = memx.serving.connect("127.0.0.1:8001", "rmt")      # was: memx.runtimes.open("rmt.memx")
    stream = model.stream(2)
    out = stream.step(tokens, lengths)                           # outputs as a local Stream gives them
    blob = stream.snapshot()                                     # memx snapshot bytes: restore here or locally

Each row of a served stream is one Triton sequence (a correlation id memx picks); the first
step of a row, and the first after ``reset``, carries START. Errors come back as memx's typed
errors: the server's memx errors by their type, an unknown or expired sequence as
SequenceError, no server as ServerUnavailableError, an unknown model as ModelNotReadyError.
"""

from __future__ import annotations

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import memx.errors as errors
from memx.errors import MemxError, ModelNotReadyError, SequenceError, ServerUnavailableError, ServingError
from memx.package import snapshot as snap

PROTOCOLS = ("grpc", "http")
SNAPSHOT = "MEMX_SNAPSHOT"
_MEMX_ERROR = re.compile(r"([A-Z][A-Za-z]+Error): (.*)", re.S)


def _client_module(protocol: str) -> Any:
    if protocol not in PROTOCOLS:
        raise ServingError("unknown protocol", expected=list(PROTOCOLS), actual=protocol)
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as e:
        raise ServingError("the Triton client is not installed", expected="tritonclient[http,grpc]", actual=str(e),
                           hint="pip install 'memx[serving]'") from None
    return module


def typed_error(e: BaseException, *, model: str, url: str) -> MemxError:
    """A Triton client exception as the memx error it stands for."""
    text = str(e)
    status = str(getattr(e, "status", lambda: "")() or "")
    body = re.sub(r"^\[[^\]]*\]\s*", "", text)
    if isinstance(e, (ConnectionError, OSError)) or "UNAVAILABLE" in status or "failed to connect" in text or "Connection refused" in text:
        return ServerUnavailableError("no Triton server answers", expected=f"a server at {url}", actual=body[:200], hint="memx serve up REPO starts one")
    if "unknown model" in text or "has no available versions" in text or "is not ready" in text:
        return ModelNotReadyError("the server does not serve the model", expected=model, actual=body[:200])
    if "must specify the START flag" in text:
        return SequenceError("the server no longer knows this sequence (ended, or idle past its timeout)", expected="a live sequence",
                             actual=body[:200], hint="reset() the stream, or restore() a snapshot")
    if m := _MEMX_ERROR.search(body):
        cls = getattr(errors, m.group(1), None)
        if isinstance(cls, type) and issubclass(cls, MemxError):
            return _rebuilt(cls, m.group(2))
    return ServingError("the server refused the request", expected="a response", actual=body[:300])


def _rebuilt(cls: type, text: str) -> MemxError:
    """The server's memx error with its fields (the JSON after ERROR_TRAILER), or its text alone."""
    from memx.serving.sequences import ERROR_TRAILER

    head, _, tail = text.rpartition(ERROR_TRAILER)
    try:
        fields = json.loads(tail[:-1]) if head and tail.endswith("]") else None
        if isinstance(fields, dict):
            return cls(fields.get("message", head), expected=fields.get("expected"), actual=fields.get("actual"), hint=fields.get("hint"))
    except (ValueError, TypeError):
        pass
    out = cls.__new__(cls)
    Exception.__init__(out, text)
    out.message, out.expected, out.actual, out.hint = text, None, None, None
    return out


class ServedModel:
    """One model on a Triton server (see :func:`connect`)."""

    def __init__(self, url: str, model: str, protocol: str = "grpc", *, timeout_s: float = 60.0):
        self.url, self.model, self.protocol, self.timeout_s = url, model, protocol, timeout_s
        self.module = _client_module(protocol)
        try:
            self.client = self.module.InferenceServerClient(url)
            ready = self.client.is_model_ready(model)
            config = self.client.get_model_config(model)
        except Exception as e:  # noqa: BLE001  (tritonclient raises its own and builtin errors)
            raise typed_error(e, model=model, url=url) from None
        if not ready:
            raise ModelNotReadyError("the server does not serve the model", expected=model, actual="not ready")
        config = config.config if hasattr(config, "config") else config
        outputs = [(o.name, list(o.dims)) if hasattr(o, "name") else (o["name"], list(o["dims"])) for o in (config.output if hasattr(config, "output") else config["output"])]
        self.outputs = [name for name, _ in outputs if name != SNAPSHOT]
        inputs = [(i.name, list(i.dims)) if hasattr(i, "name") else (i["name"], list(i["dims"])) for i in (config.input if hasattr(config, "input") else config["input"])]
        # extra step inputs along the segment (cut to each row's length like its tokens)
        self.input_segment_axes = {name: next((i for i, d in enumerate(dims) if int(d) == -1), None) for name, dims in inputs}
        # the segment axis of each output (after batch): its variable dim; None for outputs without one
        self.segment_axes = {name: next((i for i, d in enumerate(dims) if int(d) == -1), None) for name, dims in outputs if name != SNAPSHOT}

    def stream(self, batch_size: int = 1) -> "ServedStream":
        from memx.runtimes.inputs import check_count

        return ServedStream(self, check_count(batch_size, "batch_size"))

    def infer(self, sequence_id: int, tokens: np.ndarray, *, start: bool = False, end: bool = False, command: str | None = None,
              blob: bytes | None = None, inputs: dict[str, np.ndarray] | None = None, outputs: list[str] | None = None) -> Any:
        """One request of one sequence; tokens (S,) int64."""
        m = self.module
        t = np.ascontiguousarray(tokens, dtype=np.int64).reshape(1, -1)
        req = [m.InferInput("TOKENS", list(t.shape), "INT64")]
        req[0].set_data_from_numpy(t)
        for name, value in (inputs or {}).items():
            v = np.ascontiguousarray(value)[None]
            x = m.InferInput(name, list(v.shape), _triton_dtype(v.dtype))
            x.set_data_from_numpy(v)
            req.append(x)
        for name, value in (("MEMX_COMMAND", command), ("MEMX_SNAPSHOT", blob)):
            if value is not None:
                v = np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)
                x = m.InferInput(name, [1, 1], "BYTES")
                x.set_data_from_numpy(v)
                req.append(x)
        wanted = [m.InferRequestedOutput(n) for n in (outputs if outputs is not None else self.outputs)]
        try:
            return self.client.infer(self.model, req, outputs=wanted, sequence_id=sequence_id, sequence_start=start, sequence_end=end,
                                     client_timeout=self.timeout_s) if self.protocol == "grpc" else \
                self.client.infer(self.model, req, outputs=wanted, sequence_id=sequence_id, sequence_start=start, sequence_end=end)
        except Exception as e:  # noqa: BLE001
            raise typed_error(e, model=self.model, url=self.url) from None


def _triton_dtype(dtype: np.dtype) -> str:
    return {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}[np.dtype(dtype).name]


class ServedStream:
    """``batch_size`` served sequences stepped together, like a local Stream of that batch."""

    def __init__(self, model: ServedModel, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.ids = [random.getrandbits(63) or 1 for _ in range(batch_size)]
        self.fresh = [True] * batch_size  # the next request of this row carries START
        self.segments = 0
        # gRPC requests of the rows go out together; the HTTP client (gevent) is bound to one thread
        self._pool = ThreadPoolExecutor(max_workers=min(batch_size, 16)) if batch_size > 1 and model.protocol == "grpc" else None

    def step(self, tokens: Any, lengths: Any = None, reset: Any = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Outputs [B, S, ...] (zero past each row's length, as a local Stream gives them)."""
        t = np.asarray(tokens)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[0] != self.batch_size:
            raise errors.BatchMismatchError("tokens must be [batch, segment]", expected=[self.batch_size, "S"], actual=list(t.shape))
        n = np.full(self.batch_size, t.shape[1]) if lengths is None else np.asarray(lengths).reshape(-1)
        restart = np.zeros(self.batch_size, bool) if reset is None else np.asarray(reset, dtype=bool).reshape(-1)

        def row_input(name: str, value: Any, b: int) -> np.ndarray:
            x = np.asarray(value)[b]
            axis = self.model.input_segment_axes.get(name)
            if axis is not None:
                x = x[(slice(None),) * axis + (slice(0, int(n[b])),)]
            return x.reshape(1) if x.ndim == 0 else x

        def row(b: int) -> Any:
            feed = {k: row_input(k, v, b) for k, v in inputs.items()}
            start = self.fresh[b] or bool(restart[b])
            try:
                return self.model.infer(self.ids[b], t[b, : int(n[b])], start=start, inputs=feed)
            except SequenceError as lost:
                if start:
                    raise
                try:  # the server restarted or released the sequence: its snapshot store may hold it
                    return self.model.infer(self.ids[b], t[b, : int(n[b])], start=True, command="resume", inputs=feed)
                except SequenceError:
                    raise lost from None

        results = list(self._pool.map(row, range(self.batch_size))) if self._pool else [row(b) for b in range(self.batch_size)]
        self.fresh = [False] * self.batch_size
        self.segments += 1
        out: dict[str, np.ndarray] = {}
        for name in self.model.outputs:
            rows = [r.as_numpy(name)[0] for r in results]
            shape = list(rows[0].shape)
            axis = self.model.segment_axes.get(name)
            if axis is not None:
                shape[axis] = t.shape[1]
            full = np.zeros((self.batch_size, *shape), dtype=rows[0].dtype)
            for b, x in enumerate(rows):
                full[(b, *tuple(slice(0, d) for d in x.shape))] = x
            out[name] = full
        return out

    def reset(self, rows: Any = None) -> None:
        """Rows start anew at their next step (START: the server's stream restarts from the learned initial state)."""
        for b in range(self.batch_size) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1):
            self.fresh[int(b)] = True

    def snapshot(self) -> bytes:
        """memx snapshot bytes of every row (the same bytes a local Stream of this model writes)."""
        parts = []
        for b in range(self.batch_size):
            if self.fresh[b]:
                raise SequenceError("a row that has not stepped since its start has no state on the server", expected="a stepped row", actual=f"row {b}")
            r = self.model.infer(self.ids[b], np.zeros(0, np.int64), command="snapshot", outputs=[SNAPSHOT])
            parts.append(snap.decode(bytes(r.as_numpy(SNAPSHOT).reshape(-1)[0])))
        states = {k: np.concatenate([p.states[k] for p in parts]) for k in parts[0].states}
        pending = np.concatenate([p.pending_reset for p in parts])
        return snap.encode(snap.SnapshotData(parts[0].model_id, states, pending, self.segments))

    def restore(self, blob: bytes) -> None:
        """Continue every row from snapshot bytes (of a served or a local stream of this model and batch)."""
        data = snap.decode(blob)
        if data.pending_reset.shape[0] != self.batch_size:
            raise errors.SnapshotMismatchError("snapshot batch size differs from the stream's", expected=self.batch_size, actual=int(data.pending_reset.shape[0]))
        for b in range(self.batch_size):
            row = snap.SnapshotData(data.model_id, {k: v[b : b + 1] for k, v in data.states.items()}, data.pending_reset[b : b + 1], data.segments)
            self.model.infer(self.ids[b], np.zeros(0, np.int64), start=True, command="restore", blob=snap.encode(row), outputs=[SNAPSHOT])
        self.fresh = [False] * self.batch_size
        self.segments = data.segments

    def close(self) -> None:
        """End every started row's sequence on the server (frees its stream there)."""
        for b in range(self.batch_size):
            if not self.fresh[b]:
                try:
                    self.model.infer(self.ids[b], np.zeros(0, np.int64), end=True, command="end", outputs=[SNAPSHOT])
                except SequenceError:
                    pass  # already gone (idle timeout)
        self.fresh = [True] * self.batch_size
        if self._pool:
            self._pool.shutdown()

    def __enter__(self) -> "ServedStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, model: str, protocol: str = "grpc", **options: Any) -> ServedModel:
    """The model ``model`` on the Triton server at ``url`` (host:port of its gRPC or HTTP endpoint)."""
    return ServedModel(url, model, protocol, **options)
