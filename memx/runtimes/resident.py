"""Streams whose memory stays on the device between steps (the DESIGN.md §5 Stream API).

The generic ``Stream`` (base.py) keeps its state as numpy arrays and hands it to the backend on
every call: right for CPU, a host round trip per segment on a GPU. A ``ResidentStream`` keeps
each state tensor in two device buffers instead:

- ``PingPong``: step t reads set ``t % 2`` and writes the other, so a graph never gets one
  buffer as both input and output, no copy is made, and a failed step leaves the state it
  read untouched (the flip happens last).
- ``Device``: where buffers live and how they move (``TorchDevice``: torch tensors on any torch
  device; ``OrtDevice``: ONNX Runtime OrtValues on CPU or CUDA; TensorRT uses ``TorchDevice``).
- ``Executor``: runs the package's graphs on bound buffers. ``bind`` is called every step outside
  any capture (shapes, addresses); ``launch`` only launches, so it can be captured in a CUDA graph.
  Backends that offer resident streams implement ``Backend.resident()`` returning both.
- ``GraphCache``: one captured CUDA graph per (buffer parity, batch, segment); shapes that
  change drop the others (their per-shape buffers are gone).

Only tokens, lengths, reset and extra inputs go up and the outputs come down each step; snapshots, ``state``
and ``reset(rows)`` move the state explicitly. Snapshot bytes are the common format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from memx.errors import BackendRunError, BackendUnavailableError, MemxError
from memx.package.files import Package
from memx.package import snapshot as snap
from memx.package.manifest import concrete_shape
from memx.runtimes.inputs import check_count, non_finite_state_error
from memx.runtimes.stream import Stream


# --- devices -----------------------------------------------------------------------------------
class Device(Protocol):
    graphs_supported: bool

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        """A zero-filled buffer."""
    def address(self, buf: Any) -> int: ...
    def upload(self, buf: Any, host: np.ndarray) -> None: ...
    def download(self, buf: Any) -> np.ndarray: ...
    def all_finite(self, buf: Any) -> bool: ...
    def all_finite_many(self, bufs: list[Any]) -> bool:
        """True when every buffer is finite: one check per step for all states."""
    def finish_step(self, outputs: list[Any], states: list[Any]) -> tuple[list[np.ndarray], bool]:
        """The end of a step, with one wait for the device: host copies of ``outputs`` and
        whether every buffer of ``states`` is finite (True when ``states`` is empty)."""
    def take_rows(self, buf: Any, rows: list[int]) -> Any:
        """A new buffer holding ``buf[rows]`` (batch axis 0), copied on the device."""
    def put_rows(self, dst: Any, rows: list[int], src: Any) -> None:
        """``dst[rows] = src`` on the device."""
    @property
    def stream_handle(self) -> int: ...
    def synchronize(self) -> None: ...
    def capture(self, launch: Callable[[], None]) -> Any: ...
    def replay(self, graph: Any) -> None: ...


_ONNX_FLOATS = {"tensor(float)": 1, "tensor(float16)": 10, "tensor(double)": 11}  # OrtValue.data_type() -> onnx.TensorProto type


def torch_ready(host: np.ndarray) -> np.ndarray:
    """``host`` as torch.from_numpy takes it: writable (read-only inputs are copied), C-contiguous
    and without a negative stride (numpy calls a view reversed along an axis of size 1
    contiguous; torch refuses it), copied only when it is not already."""
    arr = np.require(host, requirements=["C", "W"])
    return arr if all(st >= 0 for st in arr.strides) else arr.copy()


def _finite_host(arr: np.ndarray) -> bool:
    return arr.dtype.kind != "f" or bool(np.isfinite(arr).all())


class TorchDevice:
    """Buffers are torch tensors on ``device`` ("cpu", "cuda", "cuda:N"). On CUDA one non-default
    CUDA stream carries every launch and CUDA graphs can be captured; the finiteness check runs on
    the device and brings back one bool."""

    _DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("CUDA is not available to torch", expected="a CUDA device", actual="torch.cuda.is_available() == False")
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.graphs_supported = self.stream is not None
        self._dtypes = {n: getattr(torch, n) for n in self._DTYPES}

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.torch.zeros(shape, dtype=self._dtypes[dtype], device=self.device)

    def address(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def upload(self, buf: Any, host: np.ndarray) -> None:
        src = self.torch.from_numpy(torch_ready(host))
        if self.stream is None:
            buf.copy_(src)
            return
        with self.torch.cuda.stream(self.stream):
            buf.copy_(src, non_blocking=False)

    def download(self, buf: Any) -> np.ndarray:
        self.synchronize()
        return self._host(buf.detach().cpu(), buf)

    @staticmethod
    def _host(copied: Any, buf: Any) -> np.ndarray:
        """numpy of a tensor already copied to the host; a CPU buffer's .cpu() is the buffer itself."""
        return copied.numpy().copy() if copied.data_ptr() == buf.data_ptr() else copied.numpy()

    def finish_step(self, outputs: list[Any], states: list[Any]) -> tuple[list[np.ndarray], bool]:
        """Queue the finiteness reduction and the output copies on the stream, then wait once."""
        torch = self.torch
        if self.stream is None:  # CPU: nothing to wait for
            return [self._host(o.detach().cpu(), o) for o in outputs], self.all_finite_many(states)
        with torch.cuda.stream(self.stream):
            floats = [b for b in states if b.is_floating_point()]
            flag = torch.stack([torch.isfinite(b).all() for b in floats]).all().to("cpu", non_blocking=True) if floats else None
            copies = [o.detach().to("cpu", non_blocking=True) for o in outputs]  # pinned staging, asynchronous
        self.stream.synchronize()  # the step's one wait
        return [c.numpy() for c in copies], True if flag is None else bool(flag)

    def all_finite(self, buf: Any) -> bool:
        return self.all_finite_many([buf])

    def all_finite_many(self, bufs: list[Any]) -> bool:
        """One reduction over every float buffer: one bool crosses to the host, one sync per step."""
        floats = [b for b in bufs if b.is_floating_point()]
        if not floats:
            return True
        torch = self.torch
        if self.stream is None:
            return bool(torch.stack([torch.isfinite(b).all() for b in floats]).all())
        with torch.cuda.stream(self.stream):
            ok = torch.stack([torch.isfinite(b).all() for b in floats]).all()
        return bool(ok.item())

    def _index(self, rows: list[int]) -> Any:
        return self.torch.tensor(rows, dtype=self.torch.long, device=self.device)

    def take_rows(self, buf: Any, rows: list[int]) -> Any:
        out: list[Any] = []
        self.run_on_stream(lambda: out.append(buf.index_select(0, self._index(rows))))
        return out[0]

    def put_rows(self, dst: Any, rows: list[int], src: Any) -> None:
        self.run_on_stream(lambda: dst.index_copy_(0, self._index(rows), src))

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream) if self.stream is not None else 0

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def run_on_stream(self, fn: Callable[[], None]) -> None:
        """Run torch work on this device's stream (the default stream on CPU)."""
        if self.stream is None:
            fn()
            return
        with self.torch.cuda.stream(self.stream):
            fn()

    def capture(self, launch: Callable[[], None]) -> Any:
        if not self.graphs_supported:
            raise BackendUnavailableError("CUDA graphs need a CUDA device", expected="cuda", actual=str(self.device))
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            launch()
        return graph

    def replay(self, graph: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            graph.replay()


class OrtDevice:
    """Buffers are ONNX Runtime OrtValues on "cpu" or "cuda" (device ``index``).

    The finiteness check of a new state runs where the state lives: a two-node graph
    (x - x is NaN exactly where x is NaN or ±Inf; summed, then IsNaN) on the same providers,
    fed the state's OrtValue by IoBinding, returns one bool. On the CPU a numpy check is as
    cheap (``device_check`` forces the graph there too)."""

    graphs_supported = False  # ORT captures its own CUDA graphs (provider option enable_cuda_graph)
    stream_handle = 0

    def __init__(self, kind: str = "cpu", index: int = 0, *, providers: list[Any] | None = None, device_check: bool | None = None):
        import onnxruntime as ort

        self.ort, self.kind, self.index = ort, kind, index
        self.device = kind if kind == "cpu" else f"{kind}:{index}"
        self.providers = providers or (["CPUExecutionProvider"] if kind == "cpu" else [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"])
        self.device_check = kind != "cpu" if device_check is None else device_check
        self._check: dict[str, Any] = {}  # float type -> finiteness-check session

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        """A zero-filled buffer (ONNX Runtime allocates without initialising)."""
        buf = self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype), self.kind, self.index)
        buf.update_inplace(np.zeros(shape, dtype=dtype))
        return buf

    def address(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def upload(self, buf: Any, host: np.ndarray) -> None:
        buf.update_inplace(np.ascontiguousarray(host))  # callers pass the buffer's dtype (validated inputs, snapshot states)

    def download(self, buf: Any) -> np.ndarray:
        return np.array(buf.numpy(), copy=True)

    def all_finite(self, buf: Any) -> bool:
        dtype = buf.data_type()
        if dtype not in _ONNX_FLOATS:
            return True
        if not self.device_check:
            return _finite_host(self.download(buf))
        session = self._finite_session(dtype)
        binding = session.io_binding()
        binding.bind_ortvalue_input("x", buf)
        binding.bind_output("any_non_finite", "cpu")
        session.run_with_iobinding(binding)
        return not bool(binding.copy_outputs_to_cpu()[0])

    def all_finite_many(self, bufs: list[Any]) -> bool:
        return all(self.all_finite(b) for b in bufs)

    def take_rows(self, buf: Any, rows: list[int]) -> Any:
        """Through the host (OrtValues have no device-side gather here): exact, not fast on CUDA."""
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(buf.numpy()[rows]), self.kind, self.index)

    def put_rows(self, dst: Any, rows: list[int], src: Any) -> None:
        arr = np.array(dst.numpy(), copy=True)
        arr[rows] = src.numpy()
        dst.update_inplace(arr)

    def finish_step(self, outputs: list[Any], states: list[Any]) -> tuple[list[np.ndarray], bool]:
        """run_with_iobinding has returned: outputs are written, nothing to wait for."""
        return [self.download(o) for o in outputs], self.all_finite_many(states)

    def _finite_session(self, dtype: str) -> Any:
        """The check graph for one float type, on this device's providers (made once)."""
        if dtype not in self._check:
            from onnx import TensorProto, helper

            nodes = [
                helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                helper.make_node("Sub", ["xf", "xf"], ["zero_or_nan"]),  # NaN exactly where x is NaN or ±Inf
                helper.make_node("ReduceSum", ["zero_or_nan"], ["total"], keepdims=0),
                helper.make_node("IsNaN", ["total"], ["any_non_finite"]),
            ]
            graph = helper.make_graph(nodes, "memx_finite_check", [helper.make_tensor_value_info("x", _ONNX_FLOATS[dtype], None)],
                                      [helper.make_tensor_value_info("any_non_finite", TensorProto.BOOL, [])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            so = self.ort.SessionOptions()
            so.log_severity_level = 3
            self._check[dtype] = self.ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=self.providers)
        return self._check[dtype]

    def synchronize(self) -> None:
        pass  # run_with_iobinding returns after the outputs are written

    def capture(self, launch: Callable[[], None]) -> Any:
        raise BackendUnavailableError("the onnxruntime backend does not capture CUDA graphs itself", expected="cuda_graphs=False",
                                      actual="cuda_graphs=True", hint="use the CUDA provider option enable_cuda_graph, or the torch/tensorrt backends")

    def replay(self, graph: Any) -> None:
        raise BackendUnavailableError("nothing to replay", expected="a captured graph", actual=None)


# --- bookkeeping -------------------------------------------------------------------------------
@dataclass
class PingPong:
    """Two buffers per state; ``parity`` says which set the next step reads."""

    a: dict[str, Any]
    b: dict[str, Any]
    parity: int = 0

    def reads(self) -> dict[str, Any]:
        return self.a if self.parity == 0 else self.b

    def writes(self) -> dict[str, Any]:
        return self.b if self.parity == 0 else self.a

    def flip(self) -> None:
        self.parity ^= 1


@dataclass
class GraphCache:
    """CUDA graphs by (parity, batch, segment); other shapes are dropped when one is added
    (the per-shape buffers they captured are gone)."""

    graphs: dict[tuple[int, int, int], Any] = field(default_factory=dict)
    captures: int = 0

    def get(self, key: tuple[int, int, int], capture: Callable[[], Any]) -> Any:
        if key not in self.graphs:
            self.graphs = {k: g for k, g in self.graphs.items() if k[1:] == key[1:]}
            self.graphs[key] = capture()
            self.captures += 1
        return self.graphs[key]

    def clear(self) -> None:
        self.graphs = {}



@dataclass
class Binding:
    """Buffers of one step: state read/written (by state input/output name) and everything else."""

    inputs: dict[str, Any]  # every graph input name -> buffer
    outputs: dict[str, Any]  # every graph output name -> buffer
    batch: int
    segment: int
    parity: int


class Executor(Protocol):
    name: str

    def bind(self, binding: Binding, stream_handle: int) -> None:
        """Tell the runtime the shapes and buffers of this step (never inside a capture)."""

    def launch(self, stream_handle: int) -> None:
        """Run every graph once on the bound buffers (capturable)."""


# --- the store and the stream ------------------------------------------------------------------
class DeviceStore:
    """State in ping-pong device buffers (the StateStore of stream.py): a step uploads tokens,
    lengths and reset, launches the executor (or replays its CUDA graph), checks the written
    buffers for NaN/Inf on the device and downloads the outputs; ``commit`` flips the sets."""

    def __init__(self, package: Package, executor: Executor, device: Device, batch_size: int, *, cuda_graphs: bool, check_finite: bool):
        self.package, self.executor, self.device = package, executor, device
        self.batch_size, self.cuda_graphs, self.check_finite = batch_size, cuda_graphs, check_finite
        self.schema = snap.state_schema(package.manifest)
        self.buffers = PingPong(self._state_buffers(), self._state_buffers())
        self._io: tuple[int, dict[str, Any]] | None = None  # (segment, buffers of the non-state tensors)
        self.graphs = GraphCache()
        self._ran = False

    def _state_buffers(self) -> dict[str, Any]:
        return {n: self.device.empty((self.batch_size, *shape), dtype) for n, (shape, dtype) in self.schema.items()}

    # buffers of tokens/lengths/reset, outputs and values passed between graphs: one shape at a time
    def _io_buffers(self, segment: int) -> dict[str, Any]:
        if self._io is None or self._io[0] != segment:
            m = self.package.manifest
            state_names = {s.input for s in m.state} | {s.output for s in m.state}
            bufs: dict[str, Any] = {}
            for g in m.graphs:
                for t in list(g.inputs) + list(g.outputs):
                    if t.name not in state_names and t.name not in bufs:
                        bufs[t.name] = self.device.empty(concrete_shape(t.shape, self.batch_size, segment), t.dtype)
            self._io = (segment, bufs)
            self.graphs.clear()
        return self._io[1]

    def _binding(self, segment: int) -> Binding:
        io = self._io_buffers(segment)
        reads, writes = self.buffers.reads(), self.buffers.writes()
        inputs, outputs = dict(io), dict(io)
        for s in self.package.manifest.state:
            inputs[s.input] = reads[s.name]
            inputs[s.output] = writes[s.name]  # a later graph may read a new state
            outputs[s.output] = writes[s.name]
        return Binding(inputs, outputs, self.batch_size, segment, self.buffers.parity)

    def _launch(self, binding: Binding) -> None:
        handle = self.device.stream_handle
        self.executor.bind(binding, handle)
        if not self.cuda_graphs:
            self.executor.launch(handle)
            return
        key = (binding.parity, binding.batch, binding.segment)
        graph = self.graphs.get(key, lambda: self._capture(handle))
        self.device.replay(graph)

    def _capture(self, handle: int) -> Any:
        self.executor.launch(handle)  # one plain launch first: deferred shape/address updates, lazy init
        self.device.synchronize()
        return self.device.capture(lambda: self.executor.launch(handle))

    def run(self, tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._ran = False
        m = self.package.manifest
        try:
            binding = self._binding(tokens.shape[1])
            self.device.upload(binding.inputs["tokens"], tokens)
            self.device.upload(binding.inputs["lengths"], lengths)
            self.device.upload(binding.inputs["reset"], reset)
            for name, arr in extras.items():
                self.device.upload(binding.inputs[name], np.ascontiguousarray(arr))
            self._launch(binding)
            writes = self.buffers.writes()
            host, finite = self.device.finish_step([binding.outputs[o.name] for o in m.outputs], list(writes.values()) if self.check_finite else [])
        except MemxError:
            raise
        except Exception as e:  # the device library's own errors; the read buffers are untouched
            raise BackendRunError(f"{self.executor.name} failed to run a step: {type(e).__name__}: {e}") from e
        if not finite:
            self._name_non_finite(writes)
        self._ran = True
        return {o.name: arr for o, arr in zip(m.outputs, host)}

    def _name_non_finite(self, states: dict[str, Any]) -> None:
        """NaN/Inf in a new state (found by finish_step's one fused check) is an error naming
        the state: each buffer is looked at only now."""
        for name, buf in states.items():
            if not self.device.all_finite(buf):
                raise non_finite_state_error(name, self.device.download(buf))

    def commit(self) -> None:
        if self._ran:
            self.buffers.flip()
            self._ran = False

    def read(self) -> dict[str, np.ndarray]:
        return {n: self.device.download(b) for n, b in self.buffers.reads().items()}

    def replace(self, states: dict[str, np.ndarray]) -> None:
        """Write new state into the free buffer set, then flip: all or nothing, like a step."""
        for name, arr in states.items():
            self.device.upload(self.buffers.writes()[name], arr)
        self.buffers.flip()


class DeviceSlots:
    """The slot store of a device-resident StreamPool (pool.py): each open stream owns one row of
    the slot buffers (capacity doubles when full). A step gathers its chunk's rows into the read
    buffers of a DeviceStore of that batch size, runs it (validated, finite, one wait) and keeps
    a device copy of the written rows; ``commit`` scatters them back. State never visits the host
    during steps on the torch device."""

    def __init__(self, package: Package, executor: Executor, device: Device, *, capacity: int = 8, check_finite: bool = True):
        self.package, self.executor, self.device, self.check_finite = package, executor, device, check_finite
        self.schema = snap.state_schema(package.manifest)
        self.capacity = capacity
        self.buffers = {n: device.empty((capacity, *shape), dtype) for n, (shape, dtype) in self.schema.items()}  # (capacity, ...)
        self.row_of: dict[int, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._stores: dict[int, DeviceStore] = {}  # by batch size

    def _grow(self) -> None:
        old, grown = self.capacity, 2 * self.capacity
        for name, (shape, dtype) in self.schema.items():
            bigger = self.device.empty((grown, *shape), dtype)
            self.device.put_rows(bigger, list(range(old)), self.buffers[name])
            self.buffers[name] = bigger
        self._free = list(range(grown - 1, old - 1, -1)) + self._free
        self.capacity = grown

    def open(self, sid: int) -> None:
        if not self._free:
            self._grow()
        row = self._free.pop()
        for name, (shape, dtype) in self.schema.items():
            self.device.put_rows(self.buffers[name], [row], self.device.empty((1, *shape), dtype))  # zeros
        self.row_of[sid] = row

    def close(self, sid: int) -> None:
        self._free.append(self.row_of.pop(sid))

    def read(self, sid: int) -> dict[str, np.ndarray]:
        return {n: self.device.download(self.device.take_rows(b, [self.row_of[sid]])) for n, b in self.buffers.items()}

    def write(self, sid: int, states: dict[str, np.ndarray]) -> None:
        staged = {}
        for name, arr in states.items():  # upload everything first: a failure leaves the row as it was
            staged[name] = self.device.empty(tuple(arr.shape), self.schema[name][1])
            self.device.upload(staged[name], arr)
        for name, buf in staged.items():
            self.device.put_rows(self.buffers[name], [self.row_of[sid]], buf)

    def _store(self, batch: int) -> DeviceStore:
        if batch not in self._stores:
            self._stores[batch] = DeviceStore(self.package, self.executor, self.device, batch, cuda_graphs=False, check_finite=self.check_finite)
        return self._stores[batch]

    def run(self, sids: list[int], tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        rows, store = [self.row_of[s] for s in sids], self._store(len(sids))
        every = list(range(len(sids)))
        for name, buf in store.buffers.reads().items():  # gather the chunk's rows into the store's read set
            self.device.put_rows(buf, every, self.device.take_rows(self.buffers[name], rows))
        outputs = store.run(tokens, lengths, reset, extras)  # raises before anything of the slots changed
        written = {n: self.device.take_rows(b, every) for n, b in store.buffers.writes().items()}  # the next chunk may reuse the store
        return outputs, written

    def commit(self, sids: list[int], held: dict[str, Any]) -> None:
        rows = [self.row_of[s] for s in sids]
        for name, buf in held.items():
            self.device.put_rows(self.buffers[name], rows, buf)


class ResidentStream(Stream):
    """A stream whose state never leaves the device during steps: the one ``Stream`` over a
    ``DeviceStore``, so the same API and guarantees (validated inputs, transactional steps,
    reset(rows), snapshot/restore in the common bytes)."""

    def __init__(self, package: Package, executor: Executor, device: Device, batch_size: int = 1, *, cuda_graphs: bool = False, check_finite: bool = True):
        batch_size = check_count(batch_size, "batch_size")
        if cuda_graphs and not device.graphs_supported:
            raise BackendUnavailableError(f"CUDA graphs are not available for {executor.name} on this device", expected="a CUDA device of the torch or tensorrt backend",
                                          actual=str(getattr(device, "device", type(device).__name__)))
        self.runtime = None
        store = DeviceStore(package, executor, device, batch_size, cuda_graphs=cuda_graphs, check_finite=check_finite)
        m = package.manifest
        self._bind(m, m.model_id(), store.schema, store, batch_size)
        self.device_store = store

    # the store's parts, for tools and tests that look at the device side
    package = property(lambda self: self.device_store.package)
    executor = property(lambda self: self.device_store.executor)
    device = property(lambda self: self.device_store.device)
    buffers = property(lambda self: self.device_store.buffers)
    graphs = property(lambda self: self.device_store.graphs)
    cuda_graphs = property(lambda self: self.device_store.cuda_graphs)
