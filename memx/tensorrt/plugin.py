"""TensorRT plugins for memx's custom ops, through ``tensorrt.plugin`` (quickly deployable plugins).

``memx::LocalGlobalAttention`` takes 4 inputs, or 6 when the layer attends to a memory
(mem_k, mem_v). A QDP plugin has one fixed signature, so memx registers two plugins:

    memx::LocalGlobalAttention      (q, k, v, lengths)               -> out
    memx::LocalGlobalAttentionMem   (q, k, v, lengths, mem_k, mem_v) -> out

both with the attributes pattern (str), window (int), causal (int). The packages keep one ONNX
op (ONNX Runtime and the function body need no change); ``plugin_graph`` rewrites the copy of a
graph that TensorRT parses: nodes with memory inputs take the ``...Mem`` name, and the memx
function bodies are dropped so that no TensorRT version can prefer them over the plugin.

Implementations (``memx/ops/triton_lga.py``, one Triton kernel):
- ``impl`` (JIT, TensorRT >= 10.6): runs the Triton kernel on TensorRT's stream; the engine then
  needs Python, torch, triton and ``register_plugins()`` wherever it is deserialized.
- ``aot_impl`` (TensorRT >= 10.9): the same kernel compiled to PTX for the build GPU and embedded
  in the engine, which then runs anywhere TensorRT runs, without Python (trtexec, memx-run).

Registration needs the ``tensorrt.plugin`` module of full TensorRT; TensorRT-RTX has none, so
ahead-of-time CI builds keep using the function bodies.
"""

# No `from __future__ import annotations` here: tensorrt.plugin reads the annotations of the
# registered functions as objects (TensorDesc, str, int), not strings.
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from memx.errors import BackendUnavailableError
from memx.ops.registry import DOMAIN
from memx.tensorrt import versions as tv

OP = "LocalGlobalAttention"
MEMORY_OP = "LocalGlobalAttentionMem"


@dataclass(frozen=True)
class PluginSpec:
    """One registered plugin: its id and which ONNX nodes it serves."""

    name: str  # op_type in the graph TensorRT parses
    inputs: tuple[str, ...]

    @property
    def plugin_id(self) -> str:
        return f"{DOMAIN}::{self.name}"

    @property
    def with_memory(self) -> bool:
        return "mem_k" in self.inputs


PLUGINS: dict[str, PluginSpec] = {
    s.plugin_id: s for s in (PluginSpec(OP, ("q", "k", "v", "lengths")), PluginSpec(MEMORY_OP, ("q", "k", "v", "lengths", "mem_k", "mem_v")))
}

_REGISTERED: set[str] = set()


def load_trtp() -> tuple[Any, Any]:
    """(tensorrt, tensorrt.plugin) of a TensorRT that has quickly deployable plugins (>= 10.6)."""
    try:
        trt = importlib.import_module("tensorrt")
        trtp = importlib.import_module("tensorrt.plugin")
    except ImportError as e:
        raise BackendUnavailableError("TensorRT plugins need full TensorRT with tensorrt.plugin", expected="tensorrt >= 10.6",
                                      actual=f"not importable ({e})", hint="TensorRT-RTX has no tensorrt.plugin: its builds use the function bodies") from None
    version = tv.parse_version(getattr(trt, "__version__", "0"))
    if not tv.quickly_deployable_plugins(version):
        raise BackendUnavailableError("tensorrt.plugin needs TensorRT >= 10.6", expected=">= 10.6", actual=trt.__version__)
    return trt, trtp


def register_plugins(trt: Any = None, trtp: Any = None, *, aot: bool | None = None) -> list[str]:
    """Register both plugins (once per process) and return their ids. ``aot``: also register the
    ahead-of-time implementation (default: when this TensorRT supports it, >= 10.9)."""
    if trtp is None:
        trt, trtp = load_trtp()
    if aot is None:
        aot = tv.aot_plugins(tv.parse_version(getattr(trt, "__version__", "0")))
    for spec in PLUGINS.values():
        if spec.plugin_id in _REGISTERED:
            continue
        _define(trt, trtp, spec, aot)
        _REGISTERED.add(spec.plugin_id)
    return sorted(PLUGINS)


# --- what a TensorRT imports for memx ops (memx doctor, memx inspect, memx build agree) ------------
@dataclass(frozen=True)
class PluginFacts:
    """How one TensorRT imports a memx op under `memx build --plugin auto`."""

    op: str  # "memx.LocalGlobalAttention"
    target: str  # "TensorRT 10.3", "tensorrt-rtx 1.7.1.116"
    mode: str  # "aot" | "jit" | "off" (the reference body) | "none" (cannot import it)
    imports: str  # what runs the op, in words
    better: str  # what a faster (or any) import needs, naming the version; "" when this is the best there is

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "target": self.target, "mode": self.mode, "imports": self.imports, "better": self.better}

    def describe(self) -> str:
        return f"{self.target}: {self.imports}" + (f"; {self.better}" if self.better else "")


def plugin_facts(op: str, version: "tv.TrtVersion", *, rtx: bool = False, target: str | None = None) -> PluginFacts:
    """The facts for memx op ``op`` ("LocalGlobalAttention") on TensorRT ``version`` (``rtx``: TensorRT-RTX of that release line)."""
    name = f"{DOMAIN}.{op}"
    where = target or f"TensorRT {version}"
    plugin = f"TensorRT >= {tv.PLUGINS_SINCE} (full TensorRT): `memx build --plugin auto` registers memx's Triton plugin"
    if op != OP:
        body = "the reference body via the ONNX parser (memx has no TensorRT plugin for this op)"
        return PluginFacts(name, where, "off" if rtx or tv.local_functions_supported(version) else "none", body, "")
    if not rtx and not tv.local_functions_supported(version):
        return PluginFacts(name, where, "none", f"nothing: TensorRT {version} imports no model-local functions and memx's plugin needs TensorRT >= {tv.PLUGINS_SINCE}",
                           f"TensorRT >= 9.0 imports the reference body; {plugin}")
    mode = tv.auto_plugin_mode(version, rtx=rtx)
    if mode == "aot":
        return PluginFacts(name, where, mode, "memx's Triton plugin, ahead of time (the kernel is embedded in the engine; nothing is needed where it runs)", "")
    if mode == "jit":
        return PluginFacts(name, where, mode, "memx's Triton plugin, JIT (memx, torch and triton are needed where the engine runs)",
                           f"embedding the kernel in the engine (ahead of time) needs TensorRT >= {tv.AOT_PLUGINS_SINCE}")
    why = "TensorRT-RTX has no tensorrt.plugin" if rtx else f"memx's plugin needs TensorRT >= {tv.PLUGINS_SINCE}"
    return PluginFacts(name, where, mode, f"the reference body via the ONNX parser (dense; correct but slower; {why})", plugin)


def installed_plugin_facts(op: str, flavour: "tv.Flavour | None" = None) -> PluginFacts:
    """The facts for the TensorRT installed here (``memx build`` uses it); without one, for the latest known TensorRT."""
    if flavour is None:
        version = tv.parse_version(tv.LATEST_KNOWN)
        return plugin_facts(op, version, target=f"TensorRT {version} (none installed here)")
    version = tv.parse_version(flavour.version)
    return plugin_facts(op, version, rtx=flavour.rtx, target=f"{flavour.name} {flavour.version} (installed)")


# --- definitions ---------------------------------------------------------------------------------
# QDP reads the parameter names and annotations of the decorated functions, so each arity is
# written out: the 4-input and the 6-input plugin.
def _define(trt: Any, trtp: Any, spec: PluginSpec, aot: bool) -> None:
    desc, autotune, impl, aot_impl = (_mem_functions if spec.with_memory else _plain_functions)(trt, trtp)
    trtp.register(spec.plugin_id)(desc)
    trtp.autotune(spec.plugin_id)(autotune)
    trtp.impl(spec.plugin_id)(impl)
    if aot:
        trtp.aot_impl(spec.plugin_id)(aot_impl)


def _type_combinations(trtp: Any, with_memory: bool) -> list[Any]:
    """q, k, v, [mem_k, mem_v,] out all fp32 or all fp16; lengths int64; linear layout."""
    floats = ["FP32|FP16"] * 3 + ["INT64"] + ["FP32|FP16"] * (3 if with_memory else 1)
    return [trtp.AutoTuneCombination(", ".join(floats), "LINEAR")]


def _plain_functions(trt: Any, trtp: Any) -> tuple:
    TensorDesc = trtp.TensorDesc

    def desc(q: TensorDesc, k: TensorDesc, v: TensorDesc, lengths: TensorDesc, pattern: str, window: int, causal: int) -> TensorDesc:
        return q.like()

    # autotune/impl/aot_impl: QDP checks any annotations against `desc`, so they carry none
    def autotune(q, k, v, lengths, outputs):  # noqa: ANN001, ANN202
        return _type_combinations(trtp, with_memory=False)

    def impl(q, k, v, lengths, pattern, window, causal, outputs, stream):  # noqa: ANN001, ANN202
        run_jit(q, k, v, lengths, None, None, outputs[0], pattern=_text(pattern), window=int(window), causal=bool(causal), stream=stream)

    def aot_impl(q, k, v, lengths, pattern, window, causal, outputs, tactic):  # noqa: ANN001, ANN202
        return compile_aot(trt, trtp, q, None, pattern=_text(pattern), window=int(window), causal=bool(causal))

    return desc, autotune, impl, aot_impl


def _mem_functions(trt: Any, trtp: Any) -> tuple:
    TensorDesc = trtp.TensorDesc

    def desc(q: TensorDesc, k: TensorDesc, v: TensorDesc, lengths: TensorDesc, mem_k: TensorDesc, mem_v: TensorDesc,
             pattern: str, window: int, causal: int) -> TensorDesc:
        return q.like()

    def autotune(q, k, v, lengths, mem_k, mem_v, outputs):  # noqa: ANN001, ANN202
        return _type_combinations(trtp, with_memory=True)

    def impl(q, k, v, lengths, mem_k, mem_v, pattern, window, causal, outputs, stream):  # noqa: ANN001, ANN202
        run_jit(q, k, v, lengths, mem_k, mem_v, outputs[0], pattern=_text(pattern), window=int(window), causal=bool(causal), stream=stream)

    def aot_impl(q, k, v, lengths, mem_k, mem_v, pattern, window, causal, outputs, tactic):  # noqa: ANN001, ANN202
        return compile_aot(trt, trtp, q, mem_k, pattern=_text(pattern), window=int(window), causal=bool(causal))

    return desc, autotune, impl, aot_impl


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


# --- implementations ---------------------------------------------------------------------------
def run_jit(q: Any, k: Any, v: Any, lengths: Any, mem_k: Any, mem_v: Any, out: Any, *, pattern: str, window: int, causal: bool, stream: int,
            as_torch: Callable[[Any], Any] | None = None) -> None:
    """The JIT implementation: the Triton kernel on TensorRT's CUDA stream. ``as_torch`` turns
    TensorRT's tensors into torch tensors (default: through __cuda_array_interface__)."""
    import torch

    from memx.ops import triton_lga

    to_torch = as_torch or (lambda t: torch.as_tensor(t, device="cuda"))
    args = [to_torch(t) if t is not None else None for t in (q, k, v, lengths, mem_k, mem_v, out)]
    if args[0].is_cuda:
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            triton_lga.launch(*args, pattern=pattern, window=window, causal=causal)
    else:  # CPU tensors: Triton's interpreter (tests)
        triton_lga.launch(*args, pattern=pattern, window=window, causal=causal)


def _constant(expr: Any, what: str) -> int:
    if not expr.is_constant:
        raise BackendUnavailableError(f"the ahead-of-time memx plugin needs a static {what}", expected="a build-time constant", actual="a dynamic dimension",
                                      hint="export with a fixed head size/memory size, or build with --plugin jit")
    return int(expr.constant_value())


def compile_aot(trt: Any, trtp: Any, q: Any, mem_k: Any, *, pattern: str, window: int, causal: bool, arch: int | None = None) -> tuple[bytes, bytes, Any, Any]:
    """The AOT implementation: (kernel name, PTX, launch parameters, scalar arguments).

    Grid (S, B·h), one program per query row; scalar arguments H, S, M, dh resolved by TensorRT
    from the shapes at run time. Head size and memory size are compile-time constants."""
    from memx.ops import triton_lga

    shape = q.shape_expr  # (B, h, S, dh)
    head_dim = _constant(shape[3], "head size")
    memory = 0 if mem_k is None else _constant(mem_k.shape_expr[2], "memory size")
    dtype = "fp16" if q.dtype == trt.float16 else "fp32"
    if arch is None:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        arch = major * 10 + minor
    name, ptx, threads, shared = triton_lga.compile_ptx(memory=memory, dtype=dtype, pattern=pattern, window=window, causal=causal, head_dim=head_dim, arch=arch)
    ptx = triton_lga.drop_unused_params(ptx, name, triton_lga.kernel_arity(mem_k is not None))
    launch = trtp.KernelLaunchParams()
    launch.grid_x = shape[2]
    launch.grid_y = shape[0] * shape[1]
    launch.block_x = threads
    launch.shared_mem = shared
    scalars = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (shape[1], shape[2], memory, head_dim)])
    return name.encode(), ptx.encode(), launch, scalars


# --- the graph TensorRT parses ---------------------------------------------------------------------
def plugin_graph(model: Any, *, aot: bool) -> tuple[Any, dict[str, int]]:
    """A copy of ``model`` whose memx attention nodes resolve to the plugins: nodes with memory
    inputs renamed to the ``...Mem`` op, ``plugin_namespace`` set, ``aot`` chosen, and the memx
    function bodies removed. Returns (model, {plugin id: nodes})."""
    import onnx

    from memx.onnxgraph import all_nodes

    out = onnx.ModelProto()
    out.CopyFrom(model)
    used: dict[str, int] = {}
    for node in all_nodes(out):
        if node.domain != DOMAIN or node.op_type != OP:
            continue
        spec = PLUGINS[f"{DOMAIN}::{MEMORY_OP}"] if len([i for i in node.input if i]) == 6 else PLUGINS[f"{DOMAIN}::{OP}"]
        node.op_type = spec.name
        _set_attr(node, "plugin_namespace", DOMAIN)
        _set_attr(node, "aot", int(aot))
        used[spec.plugin_id] = used.get(spec.plugin_id, 0) + 1
    keep = [f for f in out.functions if f.domain != DOMAIN]
    del out.functions[:]
    out.functions.extend(keep)
    return out, used


def _set_attr(node: Any, name: str, value: Any) -> None:
    import onnx

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))
