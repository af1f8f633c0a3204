"""Running TensorRT engines of a package with the memory kept on the device.

The pieces, each testable without a GPU:

- ``PingPong``: two device buffers per state tensor; step t reads set ``t % 2`` and writes the
  other, so an engine never gets one buffer as both input and output, and no copy is made.
- ``ShapePlan``: concrete input/output shapes for (batch, segment), the optimization profile
  that holds them (``tags.choose_profile``), and whether anything changed since the last call
  (``set_input_shape`` and CUDA-graph capture are redone only then).
- ``GraphCache``: one captured CUDA graph per (buffer parity, shapes); recaptured on change.
- ``Device``: where buffers live. ``TorchCudaDevice`` (torch CUDA tensors and one CUDA stream)
  on GPU hosts; tests use a host stand-in with a fake execution context.
- ``TensorRTStream``: the Stream API (step, reset, snapshot/restore with the same bytes as
  every memx runtime) over the engines of a package.

Engines are refused unless their build tags fit this TensorRT and GPU (``tags.check_runnable``).
Version-compatible plans load with ``engine_host_code_allowed``; with only the lean runtime
(``tensorrt_lean``) installed, only version-compatible plans can run.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from memx.errors import BackendUnavailableError, EngineError, NonFiniteStateError
from memx.exporter.manifest import GraphInfo
from memx.exporter.package import Package
from memx.runtimes import snapshot as snap
from memx.runtimes.inputs import as_array, check_lengths, check_reset, check_tokens
from memx.tensorrt.tags import BuildTags, Profile, check_runnable, choose_profile, engine_tags

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


# --- device abstraction --------------------------------------------------------------------------
class Device(Protocol):
    def empty(self, shape: tuple[int, ...], dtype: str) -> Any: ...
    def address(self, buf: Any) -> int: ...
    def upload(self, buf: Any, host: np.ndarray) -> None: ...
    def download(self, buf: Any) -> np.ndarray: ...
    @property
    def stream_handle(self) -> int: ...
    def synchronize(self) -> None: ...
    def capture(self, launch: Callable[[], None]) -> Any: ...
    def replay(self, graph: Any) -> None: ...


class TorchCudaDevice:
    """Buffers are torch CUDA tensors; one non-default CUDA stream carries every launch."""

    def __init__(self, index: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("the TensorRT runtime needs a CUDA GPU", expected="torch.cuda.is_available()", actual=False)
        self.torch = torch
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.Stream(self.device)
        self._dtypes = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32, "int8": torch.int8,
                        "uint8": torch.uint8, "bool": torch.bool}

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.torch.zeros(shape, dtype=self._dtypes[dtype], device=self.device)

    def address(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def upload(self, buf: Any, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.copy_(self.torch.from_numpy(np.ascontiguousarray(host)), non_blocking=False)

    def download(self, buf: Any) -> np.ndarray:
        self.stream.synchronize()
        return buf.detach().cpu().numpy()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, launch: Callable[[], None]) -> Any:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            launch()
        return graph

    def replay(self, graph: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            graph.replay()


# --- pure bookkeeping ---------------------------------------------------------------------------
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
class ShapePlan:
    """Concrete shapes of one call and the profile holding them; remembers the last call."""

    profiles: list[Profile]
    last: tuple[int, int] | None = None
    profile: int | None = None

    def plan(self, batch: int, segment: int) -> tuple[int, bool]:
        """(profile index, changed since the previous call)."""
        key = (batch, segment)
        if key == self.last:
            return self.profile, False  # type: ignore[return-value]
        self.profile = choose_profile(self.profiles, batch, segment)
        self.last = key
        return self.profile, True

    @staticmethod
    def input_shape(spec: list[int | str], batch: int, segment: int) -> tuple[int, ...]:
        return tuple(batch if d == "batch" else segment if d == "segment" else int(d) for d in spec)


@dataclass
class GraphCache:
    """CUDA graphs by (parity, batch, segment); cleared when shapes change (addresses of the
    per-shape buffers change with them)."""

    graphs: dict[tuple[int, int, int], Any] = field(default_factory=dict)
    captures: int = 0

    def get(self, key: tuple[int, int, int], capture: Callable[[], Any]) -> Any:
        if key not in self.graphs:
            self.graphs = {k: g for k, g in self.graphs.items() if k[1:] == key[1:]}  # other shapes: stale
            self.graphs[key] = capture()
            self.captures += 1
        return self.graphs[key]


# --- TensorRT loading ---------------------------------------------------------------------------
def load_trt(prefer_lean: bool = False) -> tuple[Any, str]:
    """(module, flavour): full tensorrt, else the lean runtime (version-compatible plans only)."""
    names = ["tensorrt_lean", "tensorrt"] if prefer_lean else ["tensorrt", "tensorrt_lean"]
    broken = []
    for name in names:
        if importlib.util.find_spec(name) is not None:
            try:
                return importlib.import_module(name), name
            except (ImportError, OSError) as e:  # e.g. the PyPI stub without its libraries
                broken.append(f"{name}: {e}")
    raise BackendUnavailableError("TensorRT is not installed" if not broken else "TensorRT is installed but cannot be imported",
                                  expected="tensorrt (or tensorrt_lean for version-compatible engines)", actual="; ".join(broken) or "neither importable")


@dataclass
class GraphEngine:
    graph: GraphInfo
    tags: BuildTags
    context: Any
    plan: ShapePlan

    def set_shapes(self, shapes: dict[str, tuple[int, ...]], batch: int, segment: int, stream_handle: int) -> None:
        """Profile and input shapes for this call, told to TensorRT only when they changed."""
        profile, changed = self.plan.plan(batch, segment)
        if not changed:
            return
        self.context.set_optimization_profile_async(profile, stream_handle)
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise EngineError(f"TensorRT refused the shape of input {name!r}", expected=f"within profile {profile}", actual=list(shape))


def open_engines(pkg: Package, trt: Any, flavour: str, *, compute_capability: str | None) -> list[GraphEngine]:
    """Deserialize every graph's engine after checking its build tags against this TensorRT/GPU."""
    tags = {t.graph: t for t in engine_tags(pkg)}
    missing = [g.name for g in pkg.manifest.graphs if g.name not in tags]
    if missing:
        raise EngineError("package has no TensorRT engine for some graphs", expected=[g.name for g in pkg.manifest.graphs], actual=sorted(tags), hint=f"run `memx build {pkg.path}`")
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engines = []
    for g in pkg.manifest.graphs:
        t = tags[g.name]
        check_runnable(t, flavour="tensorrt", trt_version=trt.__version__, compute_capability=compute_capability)
        if flavour == "tensorrt_lean" and not t.version_compatible:
            raise EngineError(f"the lean runtime runs only version-compatible engines; graph {g.name!r} was not built so", expected="memx build --version-compatible", actual="a plain engine")
        if t.version_compatible:
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(pkg.file(t.file).read_bytes())
        if engine is None:
            raise EngineError(f"TensorRT could not deserialize the engine of graph {g.name!r}", expected="a plan for this TensorRT", actual=t.file)
        engines.append(GraphEngine(g, t, engine.create_execution_context(), ShapePlan(t.profiles)))
    return engines


# --- the stream ---------------------------------------------------------------------------------
class TensorRTStream:
    """A stream (or fixed batch of streams) stepped through TensorRT engines, state on the device.

    ``engines`` and ``device`` are injectable (tests pass a host device and fake contexts)."""

    def __init__(self, pkg: Package, engines: list[GraphEngine], device: Device, batch_size: int = 1, *, cuda_graphs: bool = False, check_finite: bool = True):
        self.pkg, self.engines, self.device = pkg, engines, device
        self.batch_size, self.cuda_graphs, self.check_finite = batch_size, cuda_graphs, check_finite
        m = pkg.manifest
        self._model_id = m.model_id()
        shapes = {s.name: (batch_size, *[int(d) for d in s.shape[1:]]) for s in m.state}
        self.state_dtypes = {s.name: s.dtype for s in m.state}
        self.buffers = PingPong({n: device.empty(sh, self.state_dtypes[n]) for n, sh in shapes.items()},
                                {n: device.empty(sh, self.state_dtypes[n]) for n, sh in shapes.items()})
        self.pending = np.ones(batch_size, dtype=bool)
        self.segments = 0
        self._io: dict[tuple[int, int], dict[str, Any]] = {}  # (batch, segment) -> buffers of non-state tensors
        self.graphs = [GraphCache() for _ in engines]

    # buffers of tokens/lengths/reset, outputs and inter-graph values, per shape
    def _io_buffers(self, segment: int) -> dict[str, Any]:
        key = (self.batch_size, segment)
        if key not in self._io:
            state_names = {s.input for s in self.pkg.manifest.state} | {s.output for s in self.pkg.manifest.state}
            bufs: dict[str, Any] = {}
            for e in self.engines:
                for t in list(e.graph.inputs) + list(e.graph.outputs):
                    if t.name in state_names or t.name in bufs:
                        continue
                    bufs[t.name] = self.device.empty(ShapePlan.input_shape(t.shape, self.batch_size, segment), t.dtype)
            self._io = {key: bufs}  # one shape set at a time
        return self._io[key]

    def _bind(self, e: GraphEngine, segment: int) -> None:
        """Shapes (when changed) and addresses of every I/O tensor of one graph for this parity."""
        shapes = {t.name: ShapePlan.input_shape(t.shape, self.batch_size, segment) for t in e.graph.inputs}
        e.set_shapes(shapes, self.batch_size, segment, self.device.stream_handle)
        io = self._io_buffers(segment)
        reads, writes = self.buffers.reads(), self.buffers.writes()
        by_input = {s.input: reads[s.name] for s in self.pkg.manifest.state}
        by_input.update({s.output: writes[s.name] for s in self.pkg.manifest.state})  # a later graph may read a new state
        by_output = {s.output: writes[s.name] for s in self.pkg.manifest.state}
        for t in e.graph.inputs:
            e.context.set_tensor_address(t.name, self.device.address(by_input.get(t.name, io.get(t.name))))
        for t in e.graph.outputs:
            e.context.set_tensor_address(t.name, self.device.address(by_output.get(t.name, io.get(t.name))))

    def _launch(self, segment: int) -> None:
        for i, e in enumerate(self.engines):
            self._bind(e, segment)
            run = lambda e=e: self._execute(e)  # noqa: E731
            if self.cuda_graphs:
                graph = self.graphs[i].get((self.buffers.parity, self.batch_size, segment), lambda run=run: self._capture(run))
                self.device.replay(graph)
            else:
                run()

    def _execute(self, e: GraphEngine) -> None:
        if not e.context.execute_async_v3(self.device.stream_handle):
            raise EngineError(f"TensorRT failed to run graph {e.graph.name!r}")

    def _capture(self, run: Callable[[], None]) -> Any:
        run()  # one plain launch first: TensorRT applies deferred shape/address updates outside capture
        self.device.synchronize()
        return self.device.capture(run)

    def step(self, tokens: Any, lengths: Any = None, reset: Any = None) -> dict[str, np.ndarray]:
        """Like memx Stream.step: validated, transactional (a failed step leaves the state as it
        was: the written buffers are the other parity and the flip happens last)."""
        m = self.pkg.manifest
        tok = check_tokens(as_array(tokens, "tokens"), batch=self.batch_size, vocab_size=m.vocab_size, segment=m.segment)
        seg = tok.shape[1]
        lens = check_lengths(lengths, batch=self.batch_size, segment_len=seg)
        rst = check_reset(reset, batch=self.batch_size) | self.pending
        io = self._io_buffers(seg)
        self.device.upload(io["tokens"], tok)
        self.device.upload(io["lengths"], lens)
        self.device.upload(io["reset"], rst)
        self._launch(seg)
        self.device.synchronize()
        outputs = {o.name: self.device.download(io[o.name]) for o in m.outputs}
        if self.check_finite:
            for name, buf in self.buffers.writes().items():
                arr = self.device.download(buf)
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    rows = sorted(set(np.argwhere(~np.isfinite(arr))[:, 0].tolist()))
                    raise NonFiniteStateError(f"step produced NaN/Inf in state {name!r}; state left unchanged", expected="finite values", actual=f"non-finite in rows {rows}")
        self.buffers.flip()
        self.pending = np.zeros(self.batch_size, dtype=bool)
        self.segments += 1
        return outputs

    @property
    def state(self) -> dict[str, np.ndarray]:
        return {n: self.device.download(b) for n, b in self.buffers.reads().items()}

    def snapshot(self) -> bytes:
        return snap.encode(snap.SnapshotData(self._model_id, self.state, self.pending.copy(), self.segments))

    def restore(self, blob: bytes) -> None:
        data = snap.decode(blob)
        schema = {s.name: (tuple(int(d) for d in s.shape[1:]), s.dtype) for s in self.pkg.manifest.state}
        snap.check_compatible(data, model_id=self._model_id, batch=self.batch_size, schema=schema)
        for name, arr in data.states.items():
            self.device.upload(self.buffers.reads()[name], arr)
        self.pending, self.segments = data.pending_reset.copy(), data.segments

    def reset(self) -> None:
        for name, buf in self.buffers.reads().items():
            self.device.upload(buf, np.zeros(self.device.download(buf).shape, dtype=NUMPY_DTYPES[self.state_dtypes[name]]))
        self.pending = np.ones(self.batch_size, dtype=bool)
        self.segments = 0


def open_stream(package: str | Package, batch_size: int = 1, *, cuda_graphs: bool = False, device_index: int = 0) -> TensorRTStream:
    """A TensorRTStream over the engines `memx build` put into the package (GPU host)."""
    pkg = package if isinstance(package, Package) else Package.open(package)
    trt, flavour = load_trt()
    device = TorchCudaDevice(device_index)
    cc = device.torch.cuda.get_device_capability(device_index)
    engines = open_engines(pkg, trt, flavour, compute_capability=f"sm{cc[0]}{cc[1]}")
    return TensorRTStream(pkg, engines, device, batch_size, cuda_graphs=cuda_graphs)
