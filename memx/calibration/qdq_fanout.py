"""One activation QuantizeLinear -> DequantizeLinear pair per consumer, so that ONNX Runtime's
CPU provider runs every quantized MatMul on integers; and a count of the MatMul groups it fuses.

ONNX Runtime's ``quantize_static`` (QDQ format) quantizes an activation once and lets every
consumer read the same Q -> DQ pair: one LayerNorm output feeding two projections (and a
Concat) shares one QuantizeLinear. On x86 that costs the integer kernels of those MatMuls:

- level 1, ``EnsureUniqueDQForNodeUnit`` (onnxruntime/core/optimizer/qdq_transformer/
  ensure_unique_dq_for_node_unit.cc) copies the DequantizeLinear per consumer, so the
  QuantizeLinear ends with several output edges;
- level 2, ``QDQS8ToU8Transformer`` (qdq_s8_to_u8.cc) turns an int8 Q/DQ pair into uint8 only
  when the Q has a single output edge (``optimizer_utils::CheckOutputEdges(graph, node, 1)``),
  so a shared pair stays int8;
- ``MatMulNodeGroupSelector::Check`` (qdq_selectors.cc) refuses int8 activations unless
  ``int8_allowed_`` (ARM, or the session option ``session.qdqisint8allowed``), so the MatMuls
  behind a shared pair stay float MatMuls fed by a DequantizeLinear of their weights, which
  then runs on every call.

:func:`private_activation_qdq` gives each further consumer its own Q -> DQ pair on the same
float input with the same scale and zero point: the same function, value for value. ONNX
Runtime's ``CommonSubexpressionElimination`` (common_subexpression_elimination.cc) would merge
identical Q nodes back into one, and ``ConstantSharing`` merges equal scale initializers, so
each copy carries a distinct explicit ``axis`` attribute instead: ONNX ignores ``axis`` for a
per-tensor (scalar) scale, and TensorRT's parser only requires it to be in range.
:func:`fused_matmul_groups` opens a graph in ONNX Runtime and counts what it made of each
quantized MatMul. This module needs onnx (and onnxruntime for the count), not torch.
"""

from __future__ import annotations

import collections
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# ONNX Runtime's integer forms of a Q/DQ MatMul or Gemm group on the CPU provider
FUSED_OPS = ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm")
FLOAT_MATMULS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")


def private_activation_qdq(model: onnx.ModelProto) -> int:
    """Give every consumer of a shared activation QuantizeLinear -> DequantizeLinear its own pair.

    An activation Q (its input is not a constant) whose DequantizeLinear outputs reach more than
    one consumer input keeps its first use; each further use reads a new Q -> DQ pair with the
    same inputs and a distinct explicit ``axis`` (in ``[-rank, rank - 1]``, which TensorRT's
    parser checks; ignored for a scalar scale) so ONNX Runtime's common subexpression
    elimination cannot merge the copies back (see the module doc for the rule this works
    around). DQs left without consumers are removed. A Q with a per-axis scale, read by
    anything but DequantizeLinear, or whose DQ is a graph output, is left alone; past ``2 * rank`` copies
    the remaining uses share the last one. Edits ``model`` in place (its node list must be
    topologically sorted; it stays so) and returns how many pairs were added."""
    from onnx import helper

    g = model.graph
    nodes = list(g.node)
    constants = {t.name for t in g.initializer} | {o for n in nodes if n.op_type == "Constant" for o in n.output}
    scalars = _scalar_constants(model)
    graph_outputs = {o.name for o in g.output}
    consumers: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # tensor -> (node index, input slot)
    for i, node in enumerate(nodes):
        for k, name in enumerate(node.input):
            consumers[name].append((i, k))
    ranks = _ranks(model)
    names = {n.name for n in nodes} | {o for n in nodes for o in n.output}
    before: dict[int, list[onnx.NodeProto]] = collections.defaultdict(list)  # node index -> new nodes to insert before it
    dropped: set[int] = set()
    added, last = 0, ""
    for q in nodes:
        if not _is_activation_qdq(q, "QuantizeLinear", constants, scalars) or q.output[0] in graph_outputs:
            continue
        dqs = [d for d, _ in consumers[q.output[0]]]
        if not dqs or any(not _is_activation_qdq(nodes[d], "DequantizeLinear", set(), scalars) or nodes[d].output[0] in graph_outputs for d in dqs):
            continue
        uses = [(d, c, k) for d in dqs for c, k in consumers[nodes[d].output[0]]]
        if len(uses) <= 1 and len(dqs) <= 1:
            continue
        axes = _free_axes(q, ranks.get(q.input[0], 1))
        for j, (d, c, k) in enumerate(uses[1:], start=1):
            if not axes:  # more uses than distinct in-range axes: the rest share the last copy
                nodes[c].input[k] = last
                continue
            axis, dq = axes.pop(0), nodes[d]
            q_out, dq_out = _unique(f"{q.output[0]}.use{j}", names), _unique(f"{dq.output[0]}.use{j}", names)
            new_q = helper.make_node("QuantizeLinear", list(q.input), [q_out], name=_unique(f"{q.name}.use{j}", names))
            new_dq = helper.make_node("DequantizeLinear", [q_out, *dq.input[1:]], [dq_out], name=_unique(f"{dq.name}.use{j}", names))
            for src, dst in ((q, new_q), (dq, new_dq)):
                dst.attribute.extend(a for a in src.attribute if a.name != "axis")
                dst.attribute.append(helper.make_attribute("axis", axis))
            before[c] += [new_q, new_dq]
            nodes[c].input[k] = last = dq_out
            added += 1
        kept = uses[0][0] if uses else dqs[0]
        dropped |= {d for d in dqs if d != kept}
    if added or dropped:
        order = [m for i, n in enumerate(nodes) if i not in dropped for m in (*before.get(i, []), n)]
        del g.node[:]
        g.node.extend(order)
    return added


def shared_activation_qdq(model: onnx.ModelProto) -> list[str]:
    """Names of the activation QuantizeLinear nodes with more than one consumer path (several
    DequantizeLinear nodes, or a DequantizeLinear read by several inputs): those ONNX Runtime
    leaves int8, and their MatMuls float, on x86. Empty after :func:`private_activation_qdq`
    (up to ``2 * rank`` uses per Q)."""
    g = model.graph
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    readers: dict[str, list[onnx.NodeProto | None]] = collections.defaultdict(list)  # None: a graph output
    for node in g.node:
        for name in node.input:
            readers[name].append(node)
    for o in g.output:
        readers[o.name].append(None)
    shared = []
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in constants:
            continue
        paths = sum(len(readers[r.output[0]]) if r is not None and r.op_type == "DequantizeLinear" else 1 for r in readers[q.output[0]])
        if paths > 1:
            shared.append(q.name)
    return shared


@dataclass(frozen=True)
class FusedGroups:
    """What ONNX Runtime (CPU, ORT_ENABLE_ALL) made of a graph's quantized MatMul/Gemm groups.

    ``groups``: MatMul/Gemm nodes of the graph whose two factors both come from
    DequantizeLinear; ``fused``: integer kernels in the optimized graph (``FUSED_OPS``);
    ``unfused``: float MatMul/Gemm nodes there still fed by two DequantizeLinear (their
    weights dequantized on every call)."""

    groups: int
    fused: int
    unfused: tuple[str, ...]
    ops: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.fused}/{self.groups} fused, {len(self.unfused)} float"


def fused_matmul_groups(path: str | Path, *, custom_ops_library: str | Path | None | bool = None) -> FusedGroups:
    """Open the ONNX file ``path`` in ONNX Runtime (CPU provider, ORT_ENABLE_ALL, one thread),
    save the optimized graph to a temporary file and count the MatMul groups it fused
    (QLinearMatMul / MatMulIntegerToFloat / QGemm) against those left as DequantizeLinear ->
    float MatMul. ``custom_ops_library``: memx's kernel library (None: found as the runtime
    finds it; False: none, memx ops run their reference bodies)."""
    import onnx
    import onnxruntime as ort

    source = onnx.load(str(path), load_external_data=False)
    producer = {o: n.op_type for n in source.graph.node for o in n.output}
    groups = sum(1 for n in source.graph.node if n.op_type in ("MatMul", "Gemm") and _both_dequantized(n, producer))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    library = _library(custom_ops_library)
    if library is not None:
        so.register_custom_ops_library(str(library))
    with tempfile.TemporaryDirectory(prefix="memx-fused-") as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(so.optimized_model_filepath)
    made = {o: n.op_type for n in optimized.graph.node for o in n.output}
    ops = collections.Counter(n.op_type for n in optimized.graph.node if n.op_type in FUSED_OPS + FLOAT_MATMULS)
    unfused = tuple(n.name for n in optimized.graph.node if n.op_type in FLOAT_MATMULS and _both_dequantized(n, made))
    return FusedGroups(groups, sum(ops[o] for o in FUSED_OPS), unfused, dict(ops))


def _both_dequantized(node: onnx.NodeProto, producer: dict[str, str]) -> bool:
    """A Q/DQ MatMul group: both factors come from DequantizeLinear (a float MatMul reading one
    dequantized activation, e.g. attention probabilities times values, is not one)."""
    return len(node.input) >= 2 and all(producer.get(i) == "DequantizeLinear" for i in node.input[:2])


def _scalar_constants(model: onnx.ModelProto) -> set[str]:
    """Initializers and Constant outputs holding one value (a per-tensor scale or zero point)."""
    from math import prod

    found = {t.name for t in model.graph.initializer if prod(t.dims) == 1}
    for n in model.graph.node:
        if n.op_type == "Constant" and any(a.name == "value" and prod(a.t.dims) == 1 for a in n.attribute):
            found.add(n.output[0])
    return found


def _is_activation_qdq(node: onnx.NodeProto, op_type: str, constants: set[str], scalars: set[str]) -> bool:
    """``node`` is a standard ``op_type`` with a per-tensor scale and zero point (so its axis
    means nothing) on a tensor that is not a constant (not a weight)."""
    return (node.op_type == op_type and node.domain in ("", "ai.onnx") and node.input[0] not in constants
            and all(i in scalars for i in node.input[1:3] if i))


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of each tensor whose shape the graph records (value_info, inputs, outputs)."""
    infos = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos if v.type.tensor_type.HasField("shape")}


def _free_axes(q: onnx.NodeProto, rank: int) -> list[int]:
    """In-range axis values (-1, -2, ..., -rank, then rank-1, ..., 0) other than the one ``q`` carries."""
    own = next((a.i for a in q.attribute if a.name == "axis"), None)
    rank = max(rank, 1)
    return [a for a in [*range(-1, -rank - 1, -1), *range(rank - 1, -1, -1)] if a != own]


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}.{k}", k + 1
    taken.add(out)
    return out


def _library(choice: str | Path | None | bool) -> Path | None:
    if choice is False:
        return None
    if choice not in (None, True):
        return Path(choice)  # type: ignore[arg-type]
    from memx.ops.library import find_library

    return find_library()
