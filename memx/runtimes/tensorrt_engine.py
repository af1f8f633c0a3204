"""Running TensorRT engines of a package with the memory kept on the device.

The stream itself is the shared ``memx.runtimes.resident.ResidentStream`` (ping-pong state
buffers, transactional steps, CUDA graphs per parity, common snapshots); this module adds what
is TensorRT's:

- ``ShapePlan``: the optimization profile that holds (batch, segment) (``tags.choose_profile``),
  and whether anything changed since the last call (``set_input_shape`` is redone only then).
- ``GraphEngine``: one deserialized engine, its execution context and build tags.
- ``TensorRTExecutor``: binds shapes and tensor addresses, then ``execute_async_v3`` per engine.
- ``open_engines``/``open_stream``: engines are refused unless their build tags fit this TensorRT
  and GPU (``tags.check_runnable``). Version-compatible plans load with
  ``engine_host_code_allowed``; with only the lean runtime (``tensorrt_lean``) installed, only
  version-compatible plans can run.

Everything but the TensorRT and CUDA calls is tested on the CPU with a host device and a fake
execution context (tests/tensorrt/test_runtime_logic.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from memx.errors import BackendUnavailableError, EngineError
from memx.package.manifest import GraphInfo
from memx.package.files import Package
from memx.runtimes.resident import Binding, Device, GraphCache, PingPong, ResidentStream, TorchDevice, concrete_shape
from memx.tensorrt.tags import BuildTags, Profile, check_runnable, choose_profile, engine_tags

__all__ = ["Device", "GraphCache", "GraphEngine", "PingPong", "ShapePlan", "TensorRTExecutor", "TensorRTStream", "TorchDevice", "load_trt",
           "open_engines", "open_stream"]


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


def open_engines(pkg: Package, trt: Any, flavour: str, *, compute_capability: str | None, decode: bool = False) -> list[GraphEngine]:
    """Deserialize every step graph's engine (``decode``: the decode graphs' engines, none when
    the package has none) after checking its build tags against this TensorRT/GPU."""
    tags = {t.graph: t for t in engine_tags(pkg)}
    m = pkg.manifest
    graphs = (m.decode.graphs if m.decode else []) if decode else m.graphs
    missing = [g.name for g in graphs if g.name not in tags]
    if decode and missing:
        return []  # built before memx build made decode engines, or with --no-decode: steps only
    if missing:
        raise EngineError("package has no TensorRT engine for some graphs", expected=[g.name for g in graphs], actual=sorted(tags), hint=f"run `memx build {pkg.path}`")
    if any(how == "plugin (jit)" for t in tags.values() for how in t.custom_ops.values()):
        from memx.tensorrt.plugin import register_plugins  # JIT plugins run Python: their definitions must exist here

        register_plugins()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engines = []
    for g in graphs:
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
class TensorRTExecutor:
    """Binds every engine's shapes (when the call's shape changed) and tensor addresses (each
    step: the parity changes them), then launches the engines in order on one CUDA stream."""

    name = "tensorrt"

    def __init__(self, engines: list[GraphEngine], device: Device):
        self.engines, self.device = list(engines), device

    def bind(self, binding: Binding, stream_handle: int) -> None:
        for e in self.engines:
            shapes = {t.name: concrete_shape(t.shape, binding.batch, binding.segment) for t in e.graph.inputs}
            e.set_shapes(shapes, binding.batch, binding.segment, stream_handle)
            for t in e.graph.inputs:
                e.context.set_tensor_address(t.name, self.device.address(binding.inputs[t.name]))
            for t in e.graph.outputs:
                e.context.set_tensor_address(t.name, self.device.address(binding.outputs[t.name]))

    def launch(self, stream_handle: int) -> None:
        for e in self.engines:
            if not e.context.execute_async_v3(stream_handle):
                raise EngineError(f"TensorRT failed to run graph {e.graph.name!r}")


class TensorRTStream(ResidentStream):
    """A stream (or fixed batch of streams) stepped through TensorRT engines, state on the device.

    ``engines`` and ``device`` are injectable (tests pass a host device and fake contexts)."""

    def __init__(self, pkg: Package, engines: list[GraphEngine], device: Device, batch_size: int = 1, *, cuda_graphs: bool = False, check_finite: bool = True):
        super().__init__(pkg, TensorRTExecutor(engines, device), device, batch_size, cuda_graphs=cuda_graphs, check_finite=check_finite)
        self.engines = engines

    @property
    def pkg(self) -> Package:
        return self.package


def open_stream(package: str | Package, batch_size: int = 1, *, cuda_graphs: bool = False, device_index: int = 0) -> TensorRTStream:
    """A TensorRTStream over the engines `memx build` put into the package (GPU host)."""
    pkg = package if isinstance(package, Package) else Package.open(package)
    trt, flavour = load_trt()
    device = TorchDevice(f"cuda:{device_index}")
    cc = device.torch.cuda.get_device_capability(device_index)
    engines = open_engines(pkg, trt, flavour, compute_capability=f"sm{cc[0]}{cc[1]}")
    return TensorRTStream(pkg, engines, device, batch_size, cuda_graphs=cuda_graphs)
