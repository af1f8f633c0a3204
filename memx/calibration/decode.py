"""Quantizing the decode graphs (``memx generate``) with the step's policy.

A token decoded inside a segment must get the logits the step graph gives it when the segment
is committed, so the decode graphs are quantized *as the step was*, weight by weight:

- the same trained weight appears in the step and the decode graphs (exported separately,
  under different names), so weights are matched by content;
- a decode MatMul whose weight the step keeps in float (its memory path) stays float, and the
  decode graphs' own memory path (the read memory: ``decode_open``'s state inputs, the prefix
  cache ``decode`` reads) is protected as the step's is;
- under int8-qdq, a matched MatMul's activation range is the step's calibrated range, so both
  graphs quantize the same activations with the same scale; unmatched tensors are calibrated
  on decode inputs derived from the step's recorded rollout feeds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from memx.calibration.feeds import CalibrationSet
from memx.onnxgraph import MATMULS, MemoryPath, find_memory_path
from memx.package.files import Package
from memx.package.manifest import GraphInfo, Manifest, memory_io


def weight_key(t: onnx.TensorProto) -> str:
    """A content key of an initializer: dtype, shape and bytes."""
    a = numpy_helper.to_array(t)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()).hexdigest()


def weighted_matmuls(model: onnx.ModelProto) -> dict[str, tuple[str, str, str]]:
    """MatMul/Gemm nodes with exactly one constant operand: {node: (activation input, output, weight key)}."""
    inits = {t.name: t for t in model.graph.initializer}
    keys: dict[str, str] = {}
    out = {}
    for node in model.graph.node:
        if node.op_type not in MATMULS:
            continue
        consts = [i for i in node.input[:2] if i in inits]
        acts = [i for i in node.input[:2] if i and i not in inits]
        if len(consts) == 1 and len(acts) == 1:
            if consts[0] not in keys:
                keys[consts[0]] = weight_key(inits[consts[0]])
            out[node.name] = (acts[0], node.output[0], keys[consts[0]])
    return out


@dataclass(frozen=True)
class WeightUse:
    """One MatMul of a step graph applying a weight: where, its input and output, and whether the
    memory path keeps it float."""

    graph: str
    activation: str
    output: str
    protected: bool


@dataclass
class StepPrecision:
    """How the step graphs use each weight (by content key)."""

    uses: dict[str, list[WeightUse]] = field(default_factory=dict)

    def add(self, graph: str, model: onnx.ModelProto, path: MemoryPath) -> None:
        protected = set(path.protected_nodes)
        for node, (act, result, key) in weighted_matmuls(model).items():
            self.uses.setdefault(key, []).append(WeightUse(graph, act, result, node in protected))

    def range_groups(self, graph: str) -> list[list[str]]:
        """Tensors of ``graph`` that must share one int8 range so a decode graph can take it: the
        inputs, and the outputs, of the unprotected MatMuls applying one weight (a weight applied
        to several streams: the tokens and a memory stream)."""
        groups = []
        for uses in self.uses.values():
            free = [u for u in uses if u.graph == graph and not u.protected]
            for tensors in ({u.activation for u in free}, {u.output for u in free}):
                if len(tensors) > 1:
                    groups.append(sorted(tensors))
        return groups

    def like_step(self, key: str, reads_memory: bool) -> list[WeightUse]:
        """The step's uses a decode MatMul of this weight stands for: on the memory (``decode_open``)
        the protected ones when there are any, on the tokens (``decode``) the unprotected ones when
        there are any (a weight only the memory path uses stays float everywhere)."""
        uses = self.uses.get(key, [])
        kept = [u for u in uses if u.protected == reads_memory]
        return kept or uses


def reads_memory(m: Manifest, graph: GraphInfo) -> bool:
    """``decode_open`` computes on the memory; ``decode`` on the new tokens (reading the prefix)."""
    return m.decode is not None and graph.name == m.decode.graph("decode_open").name


def decode_memory_path(model: onnx.ModelProto, m: Manifest, graph: GraphInfo, step: StepPrecision) -> MemoryPath:
    """The decode graph's memory path, where a MatMul whose weight the step also multiplies takes
    the step's decision for the same kind of use (float in ``shared_nodes`` when the step keeps
    it float, else quantized as there), and the rest (the attention reading the prefix, weights
    the step lacks) its own."""
    ins, outs = memory_io(m, graph)
    path = find_memory_path(model, ins, outs)
    mm = weighted_matmuls(model)
    follows_step = {n for n, (_, _, key) in mm.items() if key in step.uses}
    path.read_nodes = [n for n in path.read_nodes if n not in follows_step]
    path.write_nodes = [n for n in path.write_nodes if n not in follows_step]
    on_memory = reads_memory(m, graph)
    path.shared_nodes = sorted(n for n in follows_step if all(u.protected for u in step.like_step(mm[n][2], on_memory)))
    return path


def split_shared_activations(model: onnx.ModelProto, readers: dict[str, str]) -> dict[str, str]:
    """Give each MatMul named in ``readers`` ({node: the activation it reads}) its own copy of
    that activation (an Identity placed just before it), so each can take its own use's range
    from the step. The step may apply two weights to different tensors (∞-former: the query
    projection to the new tokens, the key/value projection to [short-term cache; new tokens])
    that the decode graph feeds from one tensor; one shared quantizer would take the union of
    both ranges and the decode would part from the step by an int8 step. Returns {node: copy}."""
    copies = {name: f"{act}/copy_for/{name}" for name, act in readers.items()}
    nodes = []
    for node in model.graph.node:
        if node.name in copies:
            act = readers[node.name]
            nodes.append(onnx.helper.make_node("Identity", [act], [copies[node.name]], name=f"{node.name}/input_copy"))
            node.input[list(node.input).index(act)] = copies[node.name]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)  # each copy right before its reader: still in topological order
    return copies


def shared_ranges(model: onnx.ModelProto, m: Manifest, graph: GraphInfo, step: StepPrecision,
                  step_caches: dict[str, Path]) -> tuple[dict[str, tuple[float, float]], int, int, int]:
    """Ranges the decode graph takes from the step's calibration: {tensor: (low, high)} for the
    input and the output of every MatMul whose weight the step also multiplies, from the step's
    uses of the same kind (the union where several meet in one tensor; readers of one tensor
    whose step inputs had different ranges get a copy each first); with the count of matched
    and of all weighted MatMuls and of the copies made."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    loaded = {g: load_tensors_data(p).data for g, p in step_caches.items()}
    ranges: dict[str, tuple[float, float]] = {}

    def widen(tensor: str, found: list[tuple[float, float]]) -> None:
        if not found:
            return
        lo, hi = min(r[0] for r in found), max(r[1] for r in found)
        if tensor in ranges:
            lo, hi = min(lo, ranges[tensor][0]), max(hi, ranges[tensor][1])
        ranges[tensor] = (lo, hi)

    def step_range(graph_name: str, tensor: str) -> list[tuple[float, float]]:
        data = loaded.get(graph_name, {})
        if tensor not in data:
            return []
        low, high = data[tensor].range_value
        return [(float(np.min(low)), float(np.max(high)))]

    on_memory = reads_memory(m, graph)
    mm = weighted_matmuls(model)
    uses = {name: step.like_step(key, on_memory) for name, (_, _, key) in mm.items()}
    input_ranges = {name: tuple(r for u in us for r in step_range(u.graph, u.activation)) for name, us in uses.items()}
    seen: dict[str, set[tuple]] = {}
    for name, (act, _, _) in mm.items():
        seen.setdefault(act, set()).add(input_ranges[name])
    # readers of one tensor whose step inputs had different ranges: one quantizer each
    copies = split_shared_activations(model, {name: act for name, (act, _, _) in mm.items() if len(seen[act]) > 1})
    matched = 0
    for name, (act, result, _) in mm.items():
        matched += bool(uses[name])
        widen(copies.get(name, act), list(input_ranges[name]))
        widen(result, [r for u in uses[name] for r in step_range(u.graph, u.output)])
    return ranges, matched, len(mm), len(copies)


def record_decode_feeds(pkg: Package, calib: CalibrationSet) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of the decode graphs over the calibration rollout: for each recorded step (its state,
    reset and tokens), ``decode_open`` of its memory, then ``decode`` of its tokens as a prompt
    (all but the last at once) and of the last token alone, as generation calls them."""
    from memx import runtimes
    from memx.runtimes.generation import DecodeRows

    m = pkg.manifest
    rt = runtimes.open(pkg, backend="onnxruntime")
    gen = rt.generator()
    out: dict[str, list[dict[str, np.ndarray]]] = {g.name: [] for g in gen.info.graphs}
    for feeds in calib.feeds[m.graph().name]:
        tokens = feeds["tokens"]  # (B, S)
        b = tokens.shape[0]
        s = min(tokens.shape[1], gen.info.capacity)
        states = {st.name: feeds[st.input] for st in m.state}
        open_feeds = gen.open_feeds(feeds["reset"], states)
        out[gen.open_graph.name].append(open_feeds)
        cache = {**DecodeRows.empty(gen.info, m.vocab_size, b).cache, **gen.open(feeds["reset"], states)}
        head = max(s - 1, 1)
        first = gen.decode_feeds(np.ascontiguousarray(tokens[:, :head]), np.full(b, head, np.int64), np.zeros(b, np.int64), cache)
        out[gen.decode_graph.name].append(first)
        if s > head:
            _, written = gen.decode(first["tokens"], first["lengths"], first["position"], cache)
            cache.update(written)
            out[gen.decode_graph.name].append(gen.decode_feeds(np.ascontiguousarray(tokens[:, head:s]), np.ones(b, np.int64), np.full(b, head, np.int64), cache))
    return out
