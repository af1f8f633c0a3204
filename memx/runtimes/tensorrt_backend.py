"""TensorRT backend for the generic Runtime/Stream API: runs the engines `memx build` put into
the package, so `runtimes.open(pkg, backend="tensorrt", device="cuda")` works with every memx
tool (validate, profile, pools). ``stream()`` is device-resident by default (ping-pong state
buffers, ``cuda_graphs=True`` to replay captured graphs; ``memx.runtimes.resident``); pools and
``resident=False`` streams go through ``run`` with host arrays, uploading and downloading the
state each call.

Options: ``engines``/``device_impl`` (and ``decode_engines``) inject ready engines and a device
(embedding, tests). The decode graphs' engines (``memx build`` makes them) serve ``memx generate``
through ``run``; a package built without them steps but does not generate."""

from __future__ import annotations

from typing import Any

import numpy as np

from memx.errors import BackendUnavailableError, EngineError
from memx.package.manifest import SEQUENCE_DIMS, GraphInfo
from memx.package.files import Package
from memx.runtimes.base import Backend, register_backend
from memx.runtimes.resident import concrete_shape
from memx.runtimes.tensorrt_engine import GraphEngine, TensorRTExecutor, TorchDevice, load_trt, open_engines


def _segment_of(graph: GraphInfo, feeds: dict[str, np.ndarray]) -> int | None:
    """The call's sequence length: the step's segment, or the decode graph's new tokens."""
    for t in graph.inputs:
        for d in SEQUENCE_DIMS:
            if d in t.shape:
                return int(feeds[t.name].shape[t.shape.index(d)])
    return None


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    def __init__(self, package: Package, *, device: str = "cuda", **options: Any):
        super().__init__(package, device=device, **options)
        if options.get("engines") is not None:
            engines, self.device_impl = options["engines"], options["device_impl"]
            decode = options.get("decode_engines") or []
            self.flavour = "injected"
        else:
            trt, self.flavour = load_trt()
            index = int(device.split(":")[1]) if ":" in device else 0
            self.device_impl = TorchDevice(f"cuda:{index}")
            cc = self.device_impl.torch.cuda.get_device_capability(index)
            engines = open_engines(package, trt, self.flavour, compute_capability=f"sm{cc[0]}{cc[1]}")
            decode = open_engines(package, trt, self.flavour, compute_capability=f"sm{cc[0]}{cc[1]}", decode=True)
        self.engines: dict[str, GraphEngine] = {e.graph.name: e for e in engines}  # the step's, launched in order by the resident executor
        self.decode_engines: dict[str, GraphEngine] = {e.graph.name: e for e in decode}  # memx generate's, when memx build made them
        self._buffers: dict[tuple[str, int, int | None], dict[str, Any]] = {}

    def _buffers_for(self, graph: GraphInfo, e: GraphEngine, batch: int, segment: int | None) -> dict[str, Any]:
        key = (graph.name, batch, segment)
        if key not in self._buffers:
            self._buffers = {k: v for k, v in self._buffers.items() if k[0] != graph.name}  # one shape set per graph
            bufs = {}
            for t in graph.inputs:
                bufs[t.name] = self.device_impl.empty(concrete_shape(t.shape, batch, segment or 0), t.dtype)
            for t in graph.outputs:
                known = all(isinstance(d, int) or d in ("batch", "segment") for d in t.shape)
                shape = concrete_shape(t.shape, batch, segment or 0) if known else tuple(e.context.get_tensor_shape(t.name))
                bufs[t.name] = self.device_impl.empty(shape, t.dtype)
            self._buffers[key] = bufs
        return self._buffers[key]

    def _engine(self, graph: GraphInfo) -> GraphEngine:
        e = self.engines.get(graph.name) or self.decode_engines.get(graph.name)
        if e is None:
            raise BackendUnavailableError(f"the package has no TensorRT engine for graph {graph.name!r}", expected="engines for the decode graphs",
                                          actual=sorted([*self.engines, *self.decode_engines]), hint=f"run `memx build {self.package.path}` (it builds the decode graphs too)")
        return e

    def run(self, graph: GraphInfo, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        e = self._engine(graph)
        batch = int(feeds[graph.inputs[0].name].shape[0])
        segment = _segment_of(graph, feeds)
        dev = self.device_impl
        e.set_shapes({t.name: tuple(feeds[t.name].shape) for t in graph.inputs}, batch, segment if segment is not None else 0, dev.stream_handle)
        bufs = self._buffers_for(graph, e, batch, segment)
        for t in graph.inputs:
            dev.upload(bufs[t.name], feeds[t.name])
        for name, buf in bufs.items():
            e.context.set_tensor_address(name, dev.address(buf))
        if not e.context.execute_async_v3(dev.stream_handle):
            raise EngineError(f"TensorRT failed to run graph {graph.name!r}")
        dev.synchronize()
        return {t.name: dev.download(bufs[t.name]) for t in graph.outputs}

    def resident(self) -> tuple[TensorRTExecutor, Any]:
        return TensorRTExecutor(list(self.engines.values()), self.device_impl), self.device_impl

    def describe(self) -> dict[str, Any]:
        tags = next(iter(self.engines.values())).tags
        return {"backend": self.name, "device": self.device, "tensorrt": self.flavour, "engine": f"{tags.flavour} {tags.trt_version} for {tags.compute_capability}"}
