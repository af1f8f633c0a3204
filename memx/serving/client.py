"""A served model with the Stream API: change one line to move a stream from this process to
a Triton server.

    model = memx.serving.connect("127.0.0.1:8001", "rmt")      # was: memx.runtimes.open("rmt.memx")
    stream = model.stream(2)
    out = stream.step(tokens, lengths)                           # outputs as a local Stream gives them
    blob = stream.snapshot()                                     # memx snapshot bytes: restore here or locally

On the python backend a served stream is one Triton sequence (a correlation id memx picks)
carrying all its rows; its first step, and the first after ``reset()``, carries START. On the
onnxruntime/tensorrt backends each row is a sequence of its own. Errors come back as memx's typed
errors: the server's memx errors by their type, an unknown or expired sequence as
SequenceError, no server as ServerUnavailableError, an unknown model as ModelNotReadyError.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import memx.errors as errors
from memx.errors import MemxError, ModelNotReadyError, SequenceError, ServerUnavailableError, ServingError
from memx.package import snapshot as snap

log = logging.getLogger("memx.serving")
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
                           hint="pip install 'memx-toolkit[serving]'") from None
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

    def __init__(self, url: str, model: str, protocol: str = "grpc", *, timeout_s: float = 60.0, shared_memory: bool | None = None):
        self.url, self.model, self.protocol, self.timeout_s = url, model, protocol, timeout_s
        # outputs through a system shared-memory region instead of the wire: None = when the server is on this host
        self.shared_memory = _is_loopback(url) if shared_memory is None else shared_memory
        self._shared_memory_required = bool(shared_memory)
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
        # python: memx keeps the state (snapshots, END by command); onnxruntime/tensorrt: Triton's implicit state
        self.backend = str(config.backend if hasattr(config, "backend") else config.get("backend", ""))
        outputs = [(o.name, list(o.dims)) if hasattr(o, "name") else (o["name"], list(o["dims"])) for o in (config.output if hasattr(config, "output") else config["output"])]
        self.outputs = [name for name, _ in outputs if name != SNAPSHOT]
        self.output_dims = {name: [int(d) for d in dims] for name, dims in outputs if name != SNAPSHOT}
        self.output_dtypes = {name: _numpy_dtype(o) for name, o in zip((n for n, _ in outputs), (config.output if hasattr(config, "output") else config["output"]))}
        self.max_segment = int(_parameter(config, "memx_max_segment") or 0)
        inputs = {i.name if hasattr(i, "name") else i["name"]: list(i.dims if hasattr(i, "dims") else i["dims"])
                  for i in (config.input if hasattr(config, "input") else config["input"])}
        if self.backend == "python" and len(inputs.get("TOKENS", [])) != 2:
            raise ServingError("the model's repository was written by an older memx (one row per sequence)", expected="TOKENS dims [-1, -1]",
                               actual=f"TOKENS dims {inputs.get('TOKENS')}", hint="write it again: memx serve repo PKG --out REPO --force")

    def stream(self, batch_size: int = 1) -> "ServedStream":
        from memx.runtimes.inputs import check_count

        return ServedStream(self, check_count(batch_size, "batch_size"))

    def infer(self, sequence_id: int, arrays: dict[str, np.ndarray], *, start: bool = False, end: bool = False, command: str | None = None,
              blob: bytes | None = None, outputs: list[str] | None = None, region: OutputRegion | None = None) -> Any:
        """One request of one sequence; ``arrays`` by input name, each with Triton's batch axis (1) first.
        With ``region`` the outputs are written into it (read them with ``region.read``)."""
        m = self.module
        req = []
        for name, value in arrays.items():
            v = np.ascontiguousarray(value)
            x = m.InferInput(name, list(v.shape), _triton_dtype(v.dtype))
            x.set_data_from_numpy(v)
            req.append(x)
        for name, value in (("MEMX_COMMAND", command), ("MEMX_SNAPSHOT", blob)):
            if value is not None:
                v = np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)
                x = m.InferInput(name, [1, 1], "BYTES")
                x.set_data_from_numpy(v)
                req.append(x)
        wanted = region.requested() if region is not None else [m.InferRequestedOutput(n) for n in (outputs if outputs is not None else self.outputs)]
        try:
            return self.client.infer(self.model, req, outputs=wanted, sequence_id=sequence_id, sequence_start=start, sequence_end=end,
                                     client_timeout=self.timeout_s) if self.protocol == "grpc" else \
                self.client.infer(self.model, req, outputs=wanted, sequence_id=sequence_id, sequence_start=start, sequence_end=end)
        except Exception as e:  # noqa: BLE001
            raise typed_error(e, model=self.model, url=self.url) from None


def _is_loopback(url: str) -> bool:
    host = url.rsplit("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _parameter(config: Any, key: str) -> str | None:
    params = config.parameters if hasattr(config, "parameters") else config.get("parameters", {})
    if key not in params:
        return None
    value = params[key]
    return value.string_value if hasattr(value, "string_value") else value.get("string_value")


_NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_INT8": np.int8,
                "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_}


def _numpy_dtype(output: Any) -> Any:
    """An output's numpy type from its config entry (gRPC: an enum number; HTTP: the enum word)."""
    word = output["data_type"] if isinstance(output, dict) else None
    if word is None:
        from tritonclient.grpc import model_config_pb2

        word = model_config_pb2.DataType.Name(output.data_type)
    return _NUMPY_TYPES.get(word, np.object_)


class OutputRegion:
    """A system shared-memory region (/dev/shm) the server writes one stream's outputs into, so
    the outputs do not travel through gRPC/HTTP (client and server on one host). One slot per
    output, sized for the stream's rows at the longest segment."""

    def __init__(self, model: "ServedModel", rows: int):
        import tritonclient.utils.shared_memory as shm

        self.model, self.shm = model, shm
        self.name = f"memx-{os.getpid()}-{random.getrandbits(40):010x}"
        self.slots: dict[str, tuple[int, int]] = {}  # output -> (offset, byte size)
        total = 0
        for name in model.outputs:
            dims = model.output_dims[name]  # [rows, ...]: -1 past the rows axis is the segment
            count = rows * int(np.prod([model.max_segment if d == -1 else d for d in dims[1:]], dtype=np.int64))
            size = count * np.dtype(model.output_dtypes[name]).itemsize
            self.slots[name] = (total, size)
            total += (size + 63) // 64 * 64
        self.size = max(total, 64)
        self._requested: list[Any] | None = None
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, self.size)
        try:
            self.register()
        except Exception:
            shm.destroy_shared_memory_region(self.handle)
            raise
        # a stream dropped without close() still gives its region back (at collection or exit)
        self._release = weakref.finalize(self, _release_region, model.client, shm, self.name, self.handle)

    def register(self) -> None:
        """Tell the server about the region (again after a server restart: it forgets regions)."""
        self.model.client.register_system_shared_memory(self.name, "/" + self.name, self.size)

    def requested(self) -> list[Any]:
        """The outputs requested into their slots (made once: the same every step)."""
        if self._requested is None:
            self._requested = []
            for name, (offset, size) in self.slots.items():
                r = self.model.module.InferRequestedOutput(name)
                r.set_shared_memory(self.name, size, offset=offset)
                self._requested.append(r)
        return self._requested

    def read(self, result: Any, name: str) -> np.ndarray:
        """A copy of output ``name`` of ``result`` (the region is reused by the next step)."""
        info = result.get_output(name)
        shape = [int(d) for d in (info.shape if hasattr(info, "shape") else info["shape"])]
        offset, _ = self.slots[name]
        return self.shm.get_contents_as_numpy(self.handle, self.model.output_dtypes[name], shape, offset=offset).copy()

    def close(self) -> None:
        self._release()


def _release_region(client: Any, shm: Any, name: str, handle: Any) -> None:
    try:
        client.unregister_system_shared_memory(name)
    except Exception:  # noqa: BLE001  (the server may be gone; the region is ours to remove anyway)
        pass
    shm.destroy_shared_memory_region(handle)


def _triton_dtype(dtype: np.dtype) -> str:
    return {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}[np.dtype(dtype).name]


NO_TOKENS = np.zeros((1, 0, 0), np.int64)  # a command's TOKENS: no rows to step


class ServedStream:
    """``batch_size`` rows stepped together, like a local Stream of that batch.

    On the python backend the stream is **one** Triton sequence carrying all its rows (one
    request per step, rows with their own lengths and resets; the server batches it with other
    clients' sequences). On the onnxruntime/tensorrt backends each row is its own sequence
    (Triton's implicit state is per sequence), one request per row and step."""

    def __init__(self, model: ServedModel, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.one_sequence = model.backend == "python"
        self.ids = [random.getrandbits(63) or 1 for _ in range(1 if self.one_sequence else batch_size)]
        self.fresh = [True] * len(self.ids)  # the next request of this sequence carries START
        self.reset_rows = np.zeros(batch_size, bool)  # one sequence: rows that start anew at the next step (RESET)
        self.segments = 0
        # gRPC requests of the rows go out together; the HTTP client (gevent) is bound to one thread
        self._pool = ThreadPoolExecutor(max_workers=min(batch_size, 16)) if not self.one_sequence and batch_size > 1 and model.protocol == "grpc" else None
        self.region = self._region() if self.one_sequence and model.shared_memory and model.max_segment else None

    def _region(self) -> OutputRegion | None:
        """A shared-memory region for the outputs, or None (the wire) where the server cannot map it."""
        from tritonclient.utils import InferenceServerException
        from tritonclient.utils.shared_memory import SharedMemoryException

        try:
            return OutputRegion(self.model, self.batch_size)
        except (InferenceServerException, SharedMemoryException, OSError) as e:  # the server's refusal, or /dev/shm's
            if self.model._shared_memory_required:
                raise ServingError("the server could not map a shared-memory region of this client", expected="client and server on one host, sharing /dev/shm",
                                   actual=str(e)[:200], hint="connect(..., shared_memory=False) sends outputs over the wire") from None
            log.info("outputs over the wire: shared memory unavailable (%s)", e)
            return None

    def step(self, tokens: Any, lengths: Any = None, reset: Any = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Outputs [B, S, ...] (zero past each row's length, as a local Stream gives them)."""
        t = np.asarray(tokens)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[0] != self.batch_size:
            raise errors.BatchMismatchError("tokens must be [batch, segment]", expected=[self.batch_size, "S"], actual=list(t.shape))
        n = np.full(self.batch_size, t.shape[1]) if lengths is None else np.asarray(lengths).reshape(-1)
        restart = np.zeros(self.batch_size, bool) if reset is None else np.asarray(reset, dtype=bool).reshape(-1)
        out = self._step_sequence(t, n, restart, inputs) if self.one_sequence else self._step_rows(t, n, restart, inputs)
        self.fresh = [False] * len(self.ids)
        self.reset_rows[:] = False
        self.segments += 1
        return out

    def _request(self, sid: int, arrays: dict[str, np.ndarray], start: bool) -> Any:
        """One step request; a sequence the server lost (restart, idle timeout) resumes once from its snapshot store."""
        try:
            return self._infer(sid, arrays, start=start)
        except SequenceError as lost:
            if start:
                raise
            try:
                return self._infer(sid, arrays, start=True, command="resume")
            except SequenceError:
                raise lost from None

    def _infer(self, sid: int, arrays: dict[str, np.ndarray], **options: Any) -> Any:
        """A step request; the outputs through the stream's region, registered again if the server forgot it (a restart)."""
        region = self.region if self.one_sequence else None
        try:
            return self.model.infer(sid, arrays, region=region, **options)
        except ServingError as e:
            if region is None or type(e) is not ServingError or "shared memory region" not in str(e):
                raise
            region.register()
            return self.model.infer(sid, arrays, region=region, **options)

    def _step_sequence(self, t: np.ndarray, n: np.ndarray, restart: np.ndarray, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        if n.shape != (self.batch_size,) or restart.shape != (self.batch_size,):
            raise errors.BatchMismatchError("lengths and reset need one value per row", expected=self.batch_size, actual=[n.size, restart.size])
        arrays = {"TOKENS": t.astype(np.int64, copy=False)[None], "LENGTHS": n.astype(np.int64)[None], "RESET": (restart | self.reset_rows)[None]}
        arrays.update({k: np.asarray(v)[None] for k, v in inputs.items()})
        r = self._request(self.ids[0], arrays, self.fresh[0])
        if self.region is not None:
            return {name: self.region.read(r, name)[0] for name in self.model.outputs}
        return {name: r.as_numpy(name)[0] for name in self.model.outputs}

    def _step_rows(self, t: np.ndarray, n: np.ndarray, restart: np.ndarray, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Each row its own sequence (graph backends): rows padded to the stream's width with their
        lengths, so Triton batches all sequences stepping the same width."""
        def row(b: int) -> Any:
            arrays = {"TOKENS": np.ascontiguousarray(t[b : b + 1], dtype=np.int64), "LENGTHS": np.asarray(n[b : b + 1], np.int64).reshape(1, 1)}
            arrays.update({k: np.asarray(v)[b : b + 1].reshape(1, -1) if np.ndim(v) == 1 else np.asarray(v)[b : b + 1] for k, v in inputs.items()})
            return self._request(self.ids[b], arrays, self.fresh[b] or bool(restart[b]) or bool(self.reset_rows[b]))

        results = list(self._pool.map(row, range(self.batch_size))) if self._pool else [row(b) for b in range(self.batch_size)]
        return {name: np.concatenate([r.as_numpy(name) for r in results]) for name in self.model.outputs}

    def reset(self, rows: Any = None) -> None:
        """Rows (default: all) start anew at their next step, from the learned initial state; all
        rows: the sequence restarts (START), its segment count from 0."""
        if rows is None:
            self.fresh = [True] * len(self.ids)
            self.reset_rows[:] = False
            self.segments = 0
        else:
            from memx.runtimes.inputs import reset_selection

            self.reset_rows |= reset_selection(rows, self.batch_size)

    def _needs_memx_state(self, what: str) -> None:
        if not self.one_sequence:
            raise ServingError(f"{what} needs a model served by the python backend: Triton's implicit state cannot be read or written",
                               expected="backend python", actual=self.model.backend, hint="memx serve repo PKG --backend python")

    def snapshot(self) -> bytes:
        """memx snapshot bytes of every row (the same bytes a local Stream of this model writes)."""
        self._needs_memx_state("snapshot()")
        if self.fresh[0]:
            raise SequenceError("a stream that has not stepped since its start has no state on the server", expected="a stepped stream", actual="fresh")
        r = self.model.infer(self.ids[0], {"TOKENS": NO_TOKENS}, command="snapshot", outputs=[SNAPSHOT])
        blob = bytes(r.as_numpy(SNAPSHOT).reshape(-1)[0])
        if not self.reset_rows.any():
            return blob
        data = snap.decode(blob)  # rows reset since the last step: zero and pending, as a local Stream has them
        states = {k: np.where(self.reset_rows.reshape(-1, *[1] * (v.ndim - 1)), np.zeros_like(v), v) for k, v in data.states.items()}
        return snap.encode(snap.SnapshotData(data.model_id, states, data.pending_reset | self.reset_rows, data.segments))

    def restore(self, blob: bytes) -> None:
        """Continue every row from snapshot bytes (of a served or a local stream of this model and batch)."""
        self._needs_memx_state("restore()")
        data = snap.decode(blob)
        if data.pending_reset.shape[0] != self.batch_size:
            raise errors.SnapshotMismatchError("snapshot batch size differs from the stream's", expected=self.batch_size, actual=int(data.pending_reset.shape[0]))
        self.model.infer(self.ids[0], {"TOKENS": NO_TOKENS}, start=True, command="restore", blob=blob, outputs=[SNAPSHOT])
        self.fresh = [False]
        self.reset_rows[:] = False
        self.segments = data.segments

    def close(self) -> None:
        """End the stream's sequence on the server (frees its rows there). Graph-backend models
        cannot end a sequence without a step: theirs are released by the idle timeout."""
        if self.one_sequence and not self.fresh[0]:
            try:
                self.model.infer(self.ids[0], {"TOKENS": NO_TOKENS}, end=True, command="end", outputs=[SNAPSHOT])
            except SequenceError:
                pass  # already gone (idle timeout)
        self.fresh = [True] * len(self.ids)
        if self._pool:
            self._pool.shutdown()
        if self.region is not None:
            self.region.close()
            self.region = None

    def __enter__(self) -> "ServedStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, model: str, protocol: str = "grpc", **options: Any) -> ServedModel:
    """The model ``model`` on the Triton server at ``url`` (host:port of its gRPC or HTTP endpoint).
    ``shared_memory``: python-backend streams get their outputs through a /dev/shm region rather
    than the wire (default: when ``url`` is this host; falls back to the wire if the server cannot
    map it; True makes that an error)."""
    return ServedModel(url, model, protocol, **options)
