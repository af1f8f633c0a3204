"""Graph passes for ONNX Runtime's CPU provider, run on a step graph in memory when the
backend opens its session with ``graph_passes="auto"`` (or names); the package keeps its
portable graph: TensorRT, the C++ runtime and every other backend read the file as it is.

They are opt-in: the rewrite imports onnx (0.6-1 s) and onnxruntime.transformers, which a
runtime that only runs packages never pays, and fused kernels round differently, so a
recurrent memory that amplifies rounding (rmt-ar, a pretrained MiniLM RMT) drifts away from
the unfused graph, and from the C++ runtime on the same package, over tens of segments, as
far as the unfused graph drifts from PyTorch.

Each pass rewrites a pattern into one of ONNX Runtime's fused ``com.microsoft`` kernels and
returns how many it rewrote; a graph without the pattern is left as it is. The passes are a
registry (``PASSES``), so tests enumerate them and ``memx profile``/``benchmarks/floor.py``
can compare a step with and without them:

- ``attention``: scaled dot-product attention written with ops (Reshape/Transpose to heads,
  MatMul, scale, mask, Softmax, MatMul, back to [B, S, D]) -> ``MultiHeadAttention``;
  a boolean mask becomes an additive bias, Where(mask, 0, fill) broadcast to [B, H, S, L].
- ``gelu``: ONNX Runtime's own GELU fusions (onnxruntime.transformers): the tanh or erf
  GELU written with elementwise ops, with the bias Add before it -> ``FastGelu``/``BiasGelu``.
  (Its SkipLayerNormalization fusion is left out: slower here, see fuse_gelu.)
- ``int8-matmul``: a Q/DQ MatMul (int8 activation, int8 weight) followed by a constant bias
  Add -> ``MatMulIntegerToFloat`` with the bias folded in, reading one uint8 copy of each
  activation (the x86 kernels want uint8 activations; q + 128 with zero point + 128 is the
  same value), so the shared activation is quantized once.
- ``int8-matmul-u8u8``: the same with uint8 weights (w + 128), for x86 CPUs without VNNI,
  where the u8 x s8 kernels saturate; the CPU build and ``graph_passes="auto"`` take it
  instead of ``int8-matmul`` on such a CPU (``uses_vpmaddubsw``).

Rows whose every key is masked are the one place ``attention`` changes a value: the original
graph attends uniformly over the masked keys, the fused one weights them by their scores
(both are meaningless outputs). Everything else agrees to float rounding (tests/runtimes/
test_onnxruntime_passes.py, and validate over the zoo).

Importing onnxruntime.transformers (the ``gelu`` pass) appends its folder to ``sys.path``
(ONNX Runtime's own doing; its modules import each other as top-level modules).
"""

from __future__ import annotations

import collections
import heapq
import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from memx.onnxgraph import quiet_onnxruntime_tools
from memx.registry import Registry
from memx.runtimes.cpu_features import uses_vpmaddubsw

log = logging.getLogger("memx.runtimes.onnxruntime")

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class GraphPass:
    name: str
    description: str
    rewrite: Callable[[onnx.ModelProto], int]  # rewrites in place; returns how many patterns it replaced


PASSES: Registry[GraphPass] = Registry("onnxruntime graph pass")


def register_pass(name: str, description: str) -> Callable[[Callable[[onnx.ModelProto], int]], Callable[[onnx.ModelProto], int]]:
    def wrap(fn: Callable[[onnx.ModelProto], int]) -> Callable[[onnx.ModelProto], int]:
        PASSES.add(name, GraphPass(name, description, fn))
        return fn

    return wrap


def default_passes() -> list[str]:
    """The passes "all" means: every registered pass, with one of the two int8 MatMul forms,
    ``int8-matmul-u8u8`` on x86 CPUs whose u8 x s8 kernels saturate, else ``int8-matmul``."""
    drop = "int8-matmul" if uses_vpmaddubsw() else "int8-matmul-u8u8"
    return [n for n in PASSES.names() if n != drop]


def run_passes(model: onnx.ModelProto, names: Iterable[str] | None = None) -> dict[str, int]:
    """Run the named passes (default_passes() when None) on ``model`` in place; returns
    pass name -> patterns rewritten. A pass that rewrites nothing or fails leaves the graph
    exactly as the previous pass left it."""
    done: dict[str, int] = {}
    for name in (default_passes() if names is None else list(names)):
        p = PASSES.get(name)
        saved = onnx.ModelProto()
        saved.CopyFrom(model)
        try:
            done[name] = p.rewrite(model)
        except Exception as e:  # a pattern this pass did not foresee: keep the graph as it was
            log.warning("onnxruntime graph pass %r skipped: %s: %s", name, type(e).__name__, e)
            done[name] = 0
        if not done[name]:  # nothing rewritten: not even a node renamed
            model.CopyFrom(saved)
    if any(done.values()) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


# --- graph helpers -----------------------------------------------------------------------------


class _Graph:
    """Producers, consumers and constant values of one graph, for pattern matching."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.graph = model, model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.consts = {t.name: t for t in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = n.attribute[0].t
        self._shapes: dict[str, list[int | str | None]] | None = None
        self._names = {n.name for n in self.graph.node} | set(self.producer) | {t.name for t in self.graph.initializer} | {i.name for i in self.graph.input}
        for n in self.graph.node:  # patterns are tracked by node name
            if not n.name:
                n.name = self.fresh(f"memx_{n.op_type}")

    def dims(self, name: str) -> list[int | str | None] | None:
        """The dims of ``name`` from ONNX shape inference (with data propagation): ints,
        symbols (equal symbols are equal sizes) or None where unknown; None for no shape."""
        if self._shapes is None:
            self._shapes = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False, data_prop=True)
            except Exception as e:  # custom ops without schemas, oversized models: no shapes, no matches
                log.debug("shape inference failed: %s", e)
                return None
            for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
                t = v.type.tensor_type
                if t.HasField("shape"):
                    self._shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return self._shapes.get(name)

    def const(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type and n.domain in ("", "ai.onnx") else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name`` besides Shape nodes (a rewrite that leaves a Shape
        reading a removed value is refused by _replace), if ``name`` is not a graph output."""
        c = [n for n in self.consumers.get(name, []) if n.op_type != "Shape"]
        return c[0] if len(c) == 1 and name not in self.outputs else None

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = self.graph.initializer[-1]
        return name


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _perm(node: onnx.NodeProto | None) -> list[int] | None:
    return None if node is None or node.op_type != "Transpose" else list(_attr(node, "perm", []))  # type: ignore[arg-type]


def _scalar(g: _Graph, name: str) -> float | None:
    v = g.const(name)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def _replace(g: _Graph, replaced: set[str], inserted: dict[str, list[onnx.NodeProto]]) -> None:
    """Drop the nodes named in ``replaced``, put ``inserted[name]`` where node ``name`` was,
    remove what no longer feeds anything and restore a topological order."""
    nodes: list[onnx.NodeProto] = []
    for n in g.graph.node:
        nodes.extend(inserted.get(n.name, []))
        if n.name not in replaced:
            nodes.append(n)
    outputs = {o.name for o in g.graph.output}
    while True:
        used = {i for n in nodes for i in n.input} | outputs | _subgraph_reads(nodes)
        kept = [n for n in nodes if any(o in used for o in n.output if o)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    gone = {o for n in g.graph.node if n.name in replaced for o in n.output} - {o for n in nodes for o in n.output}
    dangling = sorted({i for n in nodes for i in n.input if i in gone} | (outputs & gone))
    if dangling:
        raise ValueError(f"the rewrite removed values that are still read: {dangling[:5]}")
    del g.graph.node[:]
    g.graph.node.extend(_toposort(nodes))
    used = {i for n in nodes for i in n.input} | _subgraph_reads(nodes)
    for t in [t for t in g.graph.initializer if t.name not in used and t.name not in outputs]:
        g.graph.initializer.remove(t)


def _subgraph_reads(nodes: list[onnx.NodeProto]) -> set[str]:
    """Every name read inside the If/Loop/Scan bodies of ``nodes`` (outer values they use count as used)."""
    reads: set[str] = set()
    for n in nodes:
        for a in n.attribute:
            for body in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                reads |= {i for m in body.node for i in m.input} | _subgraph_reads(list(body.node))
    return reads


def _toposort(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every input is made before it is read (stable: the given
    order wherever it already is one)."""
    made_here = {o for n in nodes for o in n.output}
    waiting: dict[str, list[int]] = collections.defaultdict(list)
    missing = []
    for k, n in enumerate(nodes):
        needs = {i for i in list(n.input) + sorted(_subgraph_reads([n])) if i in made_here}
        missing.append(needs)
        for i in needs:
            waiting[i].append(k)
    ready = [k for k, m in enumerate(missing) if not m]
    order: list[onnx.NodeProto] = []
    heapq.heapify(ready)
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for o in nodes[k].output:
            for j in waiting.pop(o, []):
                missing[j].discard(o)
                if not missing[j]:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ValueError(f"graph pass left a cycle or a dangling input ({len(nodes) - len(order)} nodes unordered)")
    return order


# --- attention -> MultiHeadAttention ---------------------------------------------------------


@dataclass
class _Attention:
    q: str  # [B, S, D]
    k: str  # [B, L, D]
    v: str  # [B, L, D]
    heads: int
    scale: float | None
    mask: str | None  # boolean, True = attend (Where's condition)
    fill: float | None
    bias: str | None  # additive, broadcastable to [B, H, S, L]
    nodes: list[onnx.NodeProto]  # replaced by the fused node
    last: onnx.NodeProto  # the Reshape back to [B, S, D]: the fused node goes where it was and writes its output
    sizes: tuple[str, str]  # q's (B, S) and k's (B, L) as shape inference names them (equal symbols: equal sizes)


def _heads(g: _Graph, reshape: onnx.NodeProto) -> tuple[int, tuple[int | str, int | str]] | None:
    """(H, (B, S)) of a Reshape of x [B, S, D] to [B, S, H, dh] with H * dh = D, every size known
    to shape inference (symbols count: equal symbols are equal sizes); None for any other reshape."""
    x, y = g.dims(reshape.input[0]), g.dims(reshape.output[0])
    if x is None or y is None or len(x) != 3 or len(y) != 4 or any(d is None for d in x + y):
        return None
    (b, s, d), (b2, s2, h, dh) = x, y
    if (b, s) != (b2, s2) or not all(isinstance(v, int) and v > 0 for v in (d, h, dh)) or h * dh != d:  # type: ignore[operator]
        return None
    return int(h), (b, s)  # type: ignore[return-value]


def _to_heads(g: _Graph, name: str, perm: list[int]) -> tuple[str, int, list[onnx.NodeProto], tuple[int | str, int | str]] | None:
    """``name`` = Transpose(perm)(Reshape(x, [B, S, H, dh])): (x, H, the two nodes, (B, S))."""
    t = g.made_by(name, "Transpose")
    if _perm(t) != perm or g.only_consumer(name) is None:
        return None
    r = g.made_by(t.input[0], "Reshape")  # type: ignore[union-attr]
    if r is None or g.only_consumer(r.output[0]) is None:
        return None
    h = _heads(g, r)
    return None if h is None else (r.input[0], h[0], [t, r], h[1])  # type: ignore[list-item]


def _match_attention(g: _Graph, softmax: onnx.NodeProto, opset: int) -> _Attention | None:
    axis = _attr(softmax, "axis", -1 if opset >= 13 else 1)  # Softmax-1/11 default to axis 1 (and flatten)
    if axis not in (-1, 3) or (opset < 13 and axis != 3):
        return None
    nodes = [softmax]
    x = g.producer.get(softmax.input[0])
    mask = fill = bias = None
    if x is not None and x.op_type == "Where" and g.only_consumer(x.output[0]) is softmax:
        fill_src = g.made_by(x.input[2], "Expand")
        fill = _scalar(g, fill_src.input[0] if fill_src is not None else x.input[2])
        if fill is None:
            return None
        mask, nodes = x.input[0], nodes + [x]
        x = g.producer.get(x.input[1])
    elif x is not None and x.op_type == "Add" and g.only_consumer(x.output[0]) is softmax:
        for a, b in ((0, 1), (1, 0)):
            p = g.producer.get(x.input[a])
            if p is not None and p.op_type in ("Mul", "Div", "MatMul"):
                bias, nodes, x = x.input[b], nodes + [x], p
                break
        else:
            return None
    scale = None
    if x is not None and x.op_type in ("Mul", "Div") and g.only_consumer(x.output[0]) is not None:
        c = _scalar(g, x.input[1])
        if c is None or c == 0:
            return None
        scale, nodes = (c if x.op_type == "Mul" else 1.0 / c), nodes + [x]
        x = g.producer.get(x.input[0])
    if x is None or x.op_type != "MatMul" or g.only_consumer(x.output[0]) is None:
        return None
    qk = x
    q = _to_heads(g, qk.input[0], [0, 2, 1, 3])
    k = _to_heads(g, qk.input[1], [0, 2, 3, 1])
    pv = g.only_consumer(softmax.output[0])
    if q is None or k is None or pv is None or pv.op_type != "MatMul" or pv.input[0] != softmax.output[0]:
        return None
    v = _to_heads(g, pv.input[1], [0, 2, 1, 3])
    back = g.only_consumer(pv.output[0])
    if v is None or _perm(back) != [0, 2, 1, 3]:
        return None
    flat = g.only_consumer(back.output[0])  # type: ignore[union-attr]
    if flat is None or flat.op_type != "Reshape" or len({q[1], k[1], v[1]}) != 1 or k[3][0] != q[3][0] or v[3] != k[3]:
        return None
    v_width, out = g.dims(v[0]), g.dims(flat.output[0])  # the output is [B, S, width of v]
    if v_width is None or out is None or out != [q[3][0], q[3][1], v_width[-1]]:
        return None
    return _Attention(q[0], k[0], v[0], q[1], scale, mask, fill, bias,
                      nodes + [qk, pv, back, flat] + q[2] + k[2] + v[2], flat,  # type: ignore[list-item]
                      (str(q[3]), str(k[3])))


def _full_bias(g: _Graph, a: _Attention, cache: dict[tuple[str, ...], str]) -> tuple[str | None, list[onnx.NodeProto]]:
    """The additive bias of ``a`` expanded to [B, H, S, L] (MultiHeadAttention's attention_bias);
    one per mask (or bias), fill and sizes, shared by every layer with the same."""
    if a.mask is None and a.bias is None:
        return None, []
    key = (a.mask or a.bias or "", str(a.fill), str(a.heads), *a.sizes)
    if key in cache:
        return cache[key], []
    made: list[onnx.NodeProto] = []
    src = a.bias
    if a.mask is not None:  # Where(mask, 0, fill) in the scores' type (CastLike: opset >= 15, checked by the caller)
        src, zero, fill = g.fresh("memx_mha_bias"), g.fresh("memx_mha_zero"), g.fresh("memx_mha_fill")
        made += [helper.make_node("CastLike", [g.add_const("memx_zero", np.array(0.0, np.float32)), a.q], [zero], name=g.fresh("memx_mha_castlike")),
                 helper.make_node("CastLike", [g.add_const("memx_fill", np.array(a.fill, np.float32)), a.q], [fill], name=g.fresh("memx_mha_castlike")),
                 helper.make_node("Where", [a.mask, zero, fill], [src], name=g.fresh("memx_mha_bias_where"))]
    b, s, kv = g.fresh("memx_mha_b"), g.fresh("memx_mha_s"), g.fresh("memx_mha_l")
    shape, full = g.fresh("memx_mha_bias_shape"), g.fresh("memx_mha_bias_full")
    made += [
        helper.make_node("Shape", [a.q], [b], start=0, end=1, name=g.fresh("memx_mha_shape_b")),
        helper.make_node("Shape", [a.q], [s], start=1, end=2, name=g.fresh("memx_mha_shape_s")),
        helper.make_node("Shape", [a.k], [kv], start=1, end=2, name=g.fresh("memx_mha_shape_l")),
        helper.make_node("Concat", [b, g.add_const("memx_heads", np.array([a.heads], np.int64)), s, kv], [shape], axis=0, name=g.fresh("memx_mha_concat")),
        helper.make_node("Expand", [src, shape], [full], name=g.fresh("memx_mha_expand")),  # type: ignore[list-item]
    ]
    cache[key] = full
    return full, made


@register_pass("attention", "MatMul/scale/mask/Softmax/MatMul attention with head reshapes -> com.microsoft.MultiHeadAttention")
def fuse_attention(model: onnx.ModelProto) -> int:
    g = _Graph(model)
    replaced: set[str] = set()
    inserted: dict[str, list[onnx.NodeProto]] = {}
    cache: dict[tuple[str, ...], str] = {}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax" and n.domain in ("", "ai.onnx")]:
        a = _match_attention(g, softmax, opset)
        if a is None or any(n.name in replaced for n in a.nodes) or (a.mask is not None and opset < 15):
            continue
        bias, made = _full_bias(g, a, cache)
        # no scale in the graph is a scale of 1 (MultiHeadAttention's default is 1/sqrt(dh))
        attrs: dict[str, object] = {"num_heads": a.heads, "scale": 1.0 if a.scale is None else a.scale}
        mha = helper.make_node("MultiHeadAttention", [a.q, a.k, a.v, "", "", bias or ""], [a.last.output[0]], domain=MS_DOMAIN,
                               name=g.fresh("memx_mha"), **attrs)  # type: ignore[arg-type]
        inserted[a.last.name] = made + [mha]
        replaced.update(n.name for n in a.nodes)
    if inserted:
        _replace(g, replaced, inserted)
    return len(inserted)


# --- ONNX Runtime's GELU fusions --------------------------------------------------------------


@register_pass("gelu", "tanh/erf GELU (and the bias Add before it) -> com.microsoft.FastGelu/BiasGelu (onnxruntime.transformers' fusions)")
def fuse_gelu(model: onnx.ModelProto) -> int:
    """ONNX Runtime's GELU fusions only (not its whole BERT optimizer, which also rewrites
    reshapes, rotary embeddings and prunes graph inputs). Its SkipLayerNormalization fusion is
    left out too: measured slower here (0.97-1.03x on rmt-small), and it moved rmt-ar's
    rounding enough to fail its 256-segment parity."""
    from onnxruntime.transformers.fusion_biasgelu import FusionBiasGelu
    from onnxruntime.transformers.fusion_fastgelu import FusionFastGelu
    from onnxruntime.transformers.fusion_gelu import FusionGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    fused = ("Gelu", "FastGelu", "BiasGelu")
    before = sum(1 for n in model.graph.node if n.op_type in fused)
    with quiet_onnxruntime_tools():
        wrapped = OnnxModel(model)
        for fusion in (FusionGelu(wrapped), FusionFastGelu(wrapped), FusionBiasGelu(wrapped, True), FusionBiasGelu(wrapped, False)):
            fusion.apply()
    if wrapped.model is not model:
        model.CopyFrom(wrapped.model)
    nodes = _toposort(list(model.graph.node))  # fused nodes are appended at the end
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return sum(1 for n in model.graph.node if n.op_type in fused) - before


# --- Q/DQ MatMul + bias -> MatMulIntegerToFloat ----------------------------------------------


@dataclass
class _QdqMatMul:
    x: str  # the float activation
    x_scale: str
    x_zero: str | None  # int8 zero point (None: 0)
    w: str  # int8 weight [K, N]
    w_scale: str  # [] or [N]
    w_zero: str | None
    bias: str | None  # float [N]
    out: str
    nodes: list[onnx.NodeProto]
    last: onnx.NodeProto


def _dq_of_q(g: _Graph, name: str) -> tuple[str, str, str | None, list[onnx.NodeProto]] | None:
    """``name`` = DequantizeLinear(QuantizeLinear(x, s, zp int8), s, zp): (x, s, zp, [dq, q])."""
    dq = g.made_by(name, "DequantizeLinear")
    if dq is None or g.only_consumer(name) is None:
        return None
    q = g.made_by(dq.input[0], "QuantizeLinear")
    if q is None or g.only_consumer(q.output[0]) is None:
        return None
    s_q, s_dq = g.const(q.input[1]), g.const(dq.input[1])
    if s_q is None or s_q.size != 1 or s_dq is None or not np.array_equal(s_q, s_dq):
        return None
    zp_name = q.input[2] if len(q.input) > 2 and q.input[2] else None
    dq_zp_name = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
    if zp_name is None:  # int8 only when the Q says so (no zero point: uint8 output by default)
        if dq_zp_name is not None or _attr(q, "output_dtype", 0) != TensorProto.INT8:
            return None
    else:  # a constant int8 scalar zero point, the same on both sides
        zp, zp_dq = g.const(zp_name), g.const(dq_zp_name) if dq_zp_name else None
        if zp is None or zp_dq is None or zp.dtype != np.int8 or zp.size != 1 or not np.array_equal(zp, zp_dq):
            return None
    return q.input[0], q.input[1], zp_name, [dq, q]


def _match_qdq_matmul(g: _Graph, mm: onnx.NodeProto) -> _QdqMatMul | None:
    a = _dq_of_q(g, mm.input[0])
    wdq = g.made_by(mm.input[1], "DequantizeLinear")
    if a is None or wdq is None:
        return None
    w, w_scale = g.const(wdq.input[0]), g.const(wdq.input[1])
    w_zero = wdq.input[2] if len(wdq.input) > 2 and wdq.input[2] else None
    if w is None or w.dtype != np.int8 or w.ndim != 2 or w_scale is None or w_scale.size not in (1, w.shape[1]):
        return None
    if w_scale.size > 1 and _attr(wdq, "axis", 1) not in (1, -1):
        return None
    if w_zero is not None and (g.const(w_zero) is None or g.const(w_zero).dtype != np.int8):  # type: ignore[union-attr]
        return None
    nodes, last, out, bias = a[3] + [mm], mm, mm.output[0], None
    add = g.only_consumer(mm.output[0])
    if add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
        other = add.input[1] if add.input[0] == mm.output[0] else add.input[0]
        b = g.const(other)
        if b is not None and b.dtype == np.float32 and b.shape == (w.shape[1],):
            nodes, last, out, bias = nodes + [add], add, add.output[0], other
    if g.only_consumer(wdq.output[0]) is mm:
        nodes.append(wdq)
    return _QdqMatMul(a[0], a[1], a[2], wdq.input[0], wdq.input[1], w_zero, bias, out, nodes, last)


@register_pass("int8-matmul", "Q/DQ MatMul (+ bias Add) -> com.microsoft.MatMulIntegerToFloat on one uint8 copy of each activation (u8 x s8)")
def fuse_int8_matmul(model: onnx.ModelProto) -> int:
    return _fuse_int8_matmul(model, unsigned_weights=False)


@register_pass("int8-matmul-u8u8", "as int8-matmul, with the weights as uint8 too (u8 x u8: no int16 saturation on x86 CPUs without VNNI)")
def fuse_int8_matmul_u8u8(model: onnx.ModelProto) -> int:
    """x86 CPUs without VNNI multiply u8 x s8 with vpmaddubsw, whose int16 pair sums saturate
    (255 x 127 x 2 > 32767); ONNX Runtime's u8 x u8 kernels widen to int16 first and do not.
    w + 128 with zero point + 128 is the same value; only the kernel differs."""
    return _fuse_int8_matmul(model, unsigned_weights=True)


def _fuse_int8_matmul(model: onnx.ModelProto, *, unsigned_weights: bool) -> int:
    g = _Graph(model)
    replaced: set[str] = set()
    inserted: dict[str, list[onnx.NodeProto]] = {}
    quantized: dict[tuple[str, bytes, bytes], tuple[str, str]] = {}  # (x, scale, zero point) -> (uint8 activation, its zero point)
    unsigned: dict[tuple[str, str], tuple[str, str]] = {}  # (int8 weight, its zero point) -> (uint8 weight, its zero point)
    for mm in [n for n in model.graph.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]:
        m = _match_qdq_matmul(g, mm)
        if m is None or any(n.name in replaced for n in m.nodes):
            continue
        scale = g.const(m.x_scale)
        zp = g.const(m.x_zero) if m.x_zero else np.zeros((), np.int8)
        key = (m.x, scale.tobytes(), zp.tobytes())  # type: ignore[union-attr]
        made: list[onnx.NodeProto] = []
        if key not in quantized:
            quantized[key] = (g.fresh(f"{m.x}_u8"), g.add_const("memx_zero_u8", (zp.astype(np.int16) + 128).astype(np.uint8).reshape(zp.shape)))  # type: ignore[union-attr]
            made.append(helper.make_node("QuantizeLinear", [m.x, m.x_scale, quantized[key][1]], [quantized[key][0]], name=g.fresh("memx_quantize_u8")))
        x_u8, zp_u8 = quantized[key]
        w, w_zero = m.w, m.w_zero or ""
        if unsigned_weights:
            if (m.w, w_zero) not in unsigned:
                w8 = g.const(m.w)
                wz = g.const(w_zero) if w_zero else np.zeros(g.const(m.w_scale).shape, np.int8)  # type: ignore[union-attr]
                unsigned[(m.w, w_zero)] = (g.add_const(f"{m.w}_u8", (w8.astype(np.int16) + 128).astype(np.uint8)),  # type: ignore[union-attr]
                                           g.add_const(f"{m.w}_zero_u8", (wz.astype(np.int16) + 128).astype(np.uint8)))  # type: ignore[union-attr]
            w, w_zero = unsigned[(m.w, w_zero)]
        ins = [x_u8, w, m.x_scale, m.w_scale, zp_u8, w_zero, m.bias or ""]
        while ins and not ins[-1]:
            ins.pop()
        made.append(helper.make_node("MatMulIntegerToFloat", ins, [m.out], domain=MS_DOMAIN, name=g.fresh("memx_matmul_int8")))
        inserted[m.last.name] = made
        replaced.update(n.name for n in m.nodes)
    if inserted:
        _replace(g, replaced, inserted)
    return len(inserted)
