"""The TensorRT plugin of memx::LocalGlobalAttention (memx/tensorrt/plugin.py) and its Triton
kernel (memx/ops/triton_lga.py), as far as a machine without a GPU or full TensorRT goes:

- the kernel equals the reference attention, run by Triton's CPU interpreter, through the
  plugin's JIT entry point;
- the ahead-of-time artifact: PTX compiled for sm87 (Jetson Orin) and sm89 without a GPU, with
  the launch signature TensorRT uses, assembled by ptxas into a cubin;
- registration with tensorrt.plugin, through a recording stand-in that checks what QDP reads
  (plugin ids, parameter names and order, launch parameters);
- the graph TensorRT parses when plugins are on, and the --plugin choices.
The build and run with real TensorRT plugins need full TensorRT >= 10.6 and a GPU (skipped)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from memx.errors import BackendUnavailableError, EngineError, InputError

triton_missing = importlib.util.find_spec("triton") is None
needs_triton = pytest.mark.skipif(triton_missing, reason="needs triton (pip install triton; x86_64/aarch64 Linux)")

INTERPRETER_CHECK = r"""
import itertools, json, torch
from memx.ops.local_global import local_global_attention
from memx.tensorrt.plugin import run_jit
g = torch.Generator().manual_seed(0)
worst, cases = 0.0, 0
# (B, h, S, dh, window, M): windows and memories below and above one 32-key tile, odd head sizes
shapes = [(2, 2, 13, 12, 3, 5), (1, 3, 40, 16, 4, 0), (2, 1, 7, 8, 1, 3), (1, 1, 70, 8, 20, 40)]
for pattern, causal, (b, h, s, dh, w, m) in itertools.product(["band", "chunked"], [False, True], shapes):
    for with_mem in ([False, True] if m else [False]):
        q, k, v = (torch.randn(b, h, s, dh, generator=g) for _ in range(3))
        mk = torch.randn(b, h, m, dh, generator=g) if with_mem else None
        mv = torch.randn(b, h, m, dh, generator=g) if with_mem else None
        lengths = torch.tensor([s, max(1, s // 3)][:b], dtype=torch.int64)
        want = local_global_attention(q, k, v, mk, mv, lengths, pattern=pattern, window=w, causal=causal)
        out = torch.full_like(q, float("nan"))
        run_jit(q, k, v, lengths, mk, mv, out, pattern=pattern, window=w, causal=causal, stream=0, as_torch=lambda t: t)
        worst = max(worst, (out - want).abs().max().item())
        cases += 1
print(json.dumps({"worst": worst, "cases": cases}))
"""


@needs_triton
def test_triton_kernel_equals_the_reference_through_the_jit_entry_point():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", INTERPRETER_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cases"] == 28
    assert result["worst"] < 1e-5, result  # padding queries are zero, no NaN left in the output


def _entry_params(ptx: str, kernel: str) -> list[str]:
    head = ptx[ptx.index(f".entry {kernel}(") : ptx.index(")", ptx.index(f".entry {kernel}("))]
    return re.findall(rf"{kernel}_param_\d+", head)


@needs_triton
@pytest.mark.parametrize("arch, dtype, memory", [(87, "fp16", 8), (89, "fp32", 0), (89, "fp16", 40)])
def test_aot_kernel_compiles_without_a_gpu_to_the_signature_tensorrt_launches(arch, dtype, memory, tmp_path):
    import triton

    from memx.ops import triton_lga

    name, ptx, threads, shared = triton_lga.compile_ptx(memory=memory, dtype=dtype, pattern="band", window=4, causal=False, head_dim=16, arch=arch)
    arity = triton_lga.kernel_arity(memory > 0)
    assert len(_entry_params(ptx, name)) > arity  # Triton's scratch pointers
    trimmed = triton_lga.drop_unused_params(ptx, name, arity)
    assert len(_entry_params(trimmed, name)) == arity == (11 if memory else 9)
    assert f".target sm_{arch}" in trimmed and threads % 32 == 0
    (tmp_path / "k.ptx").write_text(trimmed)
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    run = subprocess.run([str(ptxas), f"-arch=sm_{arch}", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "k.cubin").stat().st_size > 1000


def test_dropping_a_parameter_the_kernel_reads_is_refused():
    from memx.ops.triton_lga import drop_unused_params

    ptx = ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1\n)\n{\n\tld.param.b64 \t%rd1, [k_param_1];\n}\n"
    with pytest.raises(ValueError, match="reads parameter k_param_1"):
        drop_unused_params(ptx, "k", 1)
    kept = drop_unused_params(ptx.replace("[k_param_1]", "[k_param_0]"), "k", 1)
    assert "k_param_1" not in kept and "k_param_0\n)" in kept


# --- registration, with a stand-in for tensorrt.plugin -----------------------------------------
class Expr:
    """A ShapeExpr stand-in: constant or symbolic, closed under *."""

    def __init__(self, value, constant=True):
        self.value, self.is_constant = value, constant

    def constant_value(self):
        assert self.is_constant
        return self.value

    def __mul__(self, other):
        return Expr(("*", self.value, getattr(other, "value", other)), self.is_constant and getattr(other, "is_constant", True))


class Desc:
    def __init__(self, shape, dtype="float32"):
        self.shape_expr, self.dtype = shape, dtype

    def like(self):
        return Desc(self.shape_expr, self.dtype)


class FakeTrtp:
    """Records what memx registers, the way tensorrt.plugin's decorators receive it."""

    TensorDesc, Tensor = Desc, object

    class KernelLaunchParams:
        pass

    class SymIntExprs(list):
        @classmethod
        def from_tuple(cls, items):
            return cls(items)

    class AutoTuneCombination:
        def __init__(self, types, layouts):
            self.types, self.layouts = types, layouts

    def __init__(self):
        self.defs: dict[tuple[str, str], object] = {}

    def SymInt32(self, e):  # noqa: N802 (TensorRT's name)
        return e

    def _decorator(kind):  # noqa: N805
        def outer(self, plugin_id):
            def wrap(fn):
                self.defs[(kind, plugin_id)] = fn
                return fn
            return wrap
        return outer

    register, autotune, impl, aot_impl = _decorator("register"), _decorator("autotune"), _decorator("impl"), _decorator("aot_impl")


class FakeTrt:
    __version__ = "10.13.0"
    float16, float32 = "float16", "float32"


def _register(aot=True):
    from memx.tensorrt import plugin

    trtp = FakeTrtp()
    plugin._REGISTERED.clear()
    try:
        ids = plugin.register_plugins(FakeTrt(), trtp, aot=aot)
    finally:
        plugin._REGISTERED.clear()
    return ids, trtp


def test_two_plugins_are_registered_with_the_signatures_qdp_reads():
    ids, trtp = _register()
    assert ids == ["memx::LocalGlobalAttention", "memx::LocalGlobalAttentionMem"]
    attrs = ["pattern", "window", "causal"]
    for pid, tensors in (("memx::LocalGlobalAttention", ["q", "k", "v", "lengths"]), ("memx::LocalGlobalAttentionMem", ["q", "k", "v", "lengths", "mem_k", "mem_v"])):
        assert list(inspect.signature(trtp.defs[("register", pid)]).parameters) == tensors + attrs
        assert list(inspect.signature(trtp.defs[("impl", pid)]).parameters) == tensors + attrs + ["outputs", "stream"]
        assert list(inspect.signature(trtp.defs[("aot_impl", pid)]).parameters) == tensors + attrs + ["outputs", "tactic"]
        sig = inspect.signature(trtp.defs[("register", pid)])
        assert [sig.parameters[a].annotation for a in attrs] == [str, int, int]  # objects, as QDP reads them (not strings)
        assert all(sig.parameters[t].annotation is Desc for t in tensors) and sig.return_annotation is Desc
        combo = trtp.defs[("autotune", pid)](*[None] * (len(tensors) + 1))[0]
        assert combo.types.split(", ")[3] == "INT64" and len(combo.types.split(", ")) == len(tensors) + 1  # every input and the output
        q = Desc([Expr(2), Expr(4), Expr(16), Expr(8)])
        assert trtp.defs[("register", pid)](q, q, q, Desc([Expr(2)], "int64"), *([q, q] if "mem_k" in tensors else []), "band", 2, 0).shape_expr is q.shape_expr
    _, no_aot = _register(aot=False)
    assert not any(kind == "aot_impl" for kind, _ in no_aot.defs)


@needs_triton
def test_aot_implementation_returns_ptx_and_launch_parameters_for_the_shapes():
    from memx.ops.triton_lga import kernel_arity
    from memx.tensorrt import plugin

    _, trtp = _register()
    batch, seg = Expr("B", constant=False), Expr("S", constant=False)
    q = Desc([batch, Expr(4), seg, Expr(16)], "float16")
    mem = Desc([batch, Expr(4), Expr(8), Expr(16)], "float16")
    original = plugin.compile_aot

    def for_sm89(*args, **kw):
        return original(*args, **kw, arch=89)

    plugin.compile_aot = for_sm89
    try:
        name, ptx, launch, scalars = trtp.defs[("aot_impl", "memx::LocalGlobalAttentionMem")](q, q, q, Desc([batch], "int64"), mem, mem, b"band", 3, 0, (q,), 0)
    finally:
        plugin.compile_aot = original
    assert name == b"lga_mem_kernel" and b".target sm_89" in ptx
    assert len(_entry_params(ptx.decode(), "lga_mem_kernel")) == kernel_arity(True)
    assert launch.grid_x is seg and launch.grid_y.value == ("*", "B", 4) and launch.block_x % 32 == 0
    assert [getattr(s, "value", s) for s in scalars] == [4, "S", 8, 16]  # H, S, M, dh
    dynamic_head = Desc([batch, Expr(4), seg, Expr("D", constant=False)])
    with pytest.raises(BackendUnavailableError, match="static head size"):
        plugin.compile_aot(FakeTrt(), trtp, dynamic_head, None, pattern="band", window=3, causal=False, arch=89)


# --- the parsed graph and the --plugin choices -------------------------------------------------
@pytest.mark.parametrize("name, op, inputs", [("gmat-tiny", "LocalGlobalAttentionMem", 6), ("gmat-nomem-tiny", "LocalGlobalAttention", 4)])
def test_plugin_graph_routes_every_memx_node_to_its_plugin(name, op, inputs, package_of):
    from memx.tensorrt.plugin import plugin_graph

    pkg = package_of(name)
    path = pkg.file(pkg.manifest.graphs[0].file)
    model = onnx.load(str(path), load_external_data=False)
    rewritten, used = plugin_graph(model, aot=True)
    nodes = [n for n in rewritten.graph.node if n.domain == "memx"]
    assert used == {f"memx::{op}": len(nodes)} and len(nodes) == 2
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert n.op_type == op and len(n.input) == inputs
        assert attrs["plugin_namespace"] == b"memx" and attrs["aot"] == 1 and attrs["pattern"] in (b"band", b"chunked")
    assert not [f for f in rewritten.functions if f.domain == "memx"]  # no body to prefer over the plugin
    assert [f.name for f in model.functions if f.domain == "memx"] == ["LocalGlobalAttention"]  # the package's graph is untouched
    assert plugin_graph(onnx.load(str(package_of("rmt-tiny").file(package_of("rmt-tiny").manifest.graphs[0].file)), load_external_data=False), aot=False)[1] == {}


def test_plugin_choices(package_of):
    from memx.tensorrt.build import plugin_mode
    from memx.tensorrt.versions import Flavour

    rtx = Flavour("tensorrt-rtx", None, "1.7.1")
    assert plugin_mode("auto", rtx) == "off" and plugin_mode("off", rtx) == "off"
    with pytest.raises(EngineError, match="needs full TensorRT >= 10.6") as e:
        plugin_mode("aot", rtx)
    assert e.value.actual == "tensorrt-rtx 1.7.1"
    with pytest.raises(EngineError, match="TensorRT >= 10.9"):
        plugin_mode("aot", Flavour("tensorrt", None, "10.7.0"))
    with pytest.raises(InputError, match="--plugin") as e:
        plugin_mode("fast", rtx)
    assert e.value.expected == ["auto", "aot", "jit", "off"]
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailableError, match="tensorrt.plugin"):
            plugin_mode("jit", Flavour("tensorrt", None, "10.8.0"))


@pytest.mark.trt_parser
def test_without_registered_plugins_the_rewritten_graph_does_not_fall_back(package_of, tmp_path):
    """The rewrite leaves TensorRT nothing but the plugin: with none registered (TensorRT-RTX has
    no tensorrt.plugin) the parser refuses the node instead of quietly using the dense body."""
    from memx.tensorrt.plugin import plugin_graph
    from memx.tensorrt.versions import installed_flavour

    flavour = installed_flavour()
    if flavour is None:
        pytest.skip("needs a TensorRT ONNX parser")
    trt = flavour.module
    pkg = package_of("gmat-tiny")
    model, _ = plugin_graph(onnx.load(str(pkg.file(pkg.manifest.graphs[0].file))), aot=False)
    onnx.save(model, tmp_path / "plugins.onnx")

    class Quiet(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            pass

    logger = Quiet()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse_from_file(str(tmp_path / "plugins.onnx"))
    errors = " ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
    assert "LocalGlobalAttentionMem" in errors or "plugin" in errors.lower(), errors
