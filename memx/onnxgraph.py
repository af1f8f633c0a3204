"""Walking ONNX graphs, shared by calibration, inspection, the TensorRT doctor and plugins.

- ``all_nodes``: the nodes of a model's main graph and of every subgraph (If/Loop/Scan bodies).
- ``constants``: the tensors that depend on no graph input.
- ``quiet_onnxruntime_tools``: onnxruntime's Python tools (quantization, transformer
  fusions) kept out of the user's terminal.
- ``find_memory_path``: the *memory path* of a graph, found on the graph itself, so it works
  for every family without per-model annotations:

  - **read side**: from each state input forward through ops that carry the state's values
    without mixing in the segment (data movement such as Reshape/Concat/Slice/Where, per-row
    normalisation, affine maps with constants) up to the first MatMul/Gemm (the *memory read
    projections*) or custom op; a residual merge with token-dependent values ends the walk;
  - **write side**: from each state output backward through the same kind of ops (and
    products/normalisations, e.g. Memformer's Biased Memory Normalization) up to the
    MatMul/Gemm that computed the written values (the *memory write computations*); a sum of
    two computed values (a residual Add) ends the walk.

  The precision policy (memx/calibration/policy.py) keeps that path out of low precision.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Iterator

import onnx

# ops whose outputs are the state's values rearranged or selected, never mixed with the segment
DATA_MOVEMENT = {
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "Expand", "Tile", "Pad", "Where", "Cast", "CastLike",
}
MATMULS = {"MatMul", "Gemm"}
# ops that say nothing about float values (shapes, masks, indices): never part of the path
NON_VALUE = {
    "Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "Range", "ConstantOfShape", "NonZero", "ArgMax", "ArgMin", "IsNaN", "IsInf", "CumSum",
}
SUMS = {"Add", "Sum"}
CONTROL_INPUTS = ("lengths", "reset")


@dataclass
class MemoryPath:
    """The memory path of one graph: tensors carrying state values, and the computations
    that read (first projections of) or write the state."""

    tensors: set[str] = field(default_factory=set)  # state values and their rearrangements
    written: set[str] = field(default_factory=set)  # the part of ``tensors`` the state outputs are made of (write side)
    read_nodes: list[str] = field(default_factory=list)  # MatMul/Gemm/custom nodes fed by the path
    write_nodes: list[str] = field(default_factory=list)  # MatMul/Gemm/custom nodes that compute written values
    path_nodes: list[str] = field(default_factory=list)  # every other node on the path (normalisations, moves)
    # decode graphs: MatMul/Gemm nodes whose weight the step graph keeps in float (memx.calibration.decode)
    shared_nodes: list[str] = field(default_factory=list)

    @property
    def protected_nodes(self) -> list[str]:
        """Nodes kept out of low precision under the default policy."""
        return sorted(set(self.read_nodes) | set(self.write_nodes) | set(self.path_nodes) | set(self.shared_nodes))

    def to_dict(self) -> dict[str, list[str]]:
        d = {"read": sorted(self.read_nodes), "write": sorted(self.write_nodes), "other": sorted(self.path_nodes)}
        if self.shared_nodes:
            d["float_in_step"] = sorted(self.shared_nodes)
        return d

def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Nodes of the main graph and of its subgraphs (If/Loop/Scan bodies)."""
    stack = [model.graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            yield node
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    stack.append(a.g)
                stack.extend(a.graphs)


def constants(model: onnx.ModelProto) -> set[str]:
    """Tensors that do not depend on any graph input (initializers and constant subgraphs)."""
    const = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all((not i) or i in const for i in node.input)):
            const.update(o for o in node.output if o)
    return const


def find_memory_path(model: onnx.ModelProto, state_inputs: list[str], state_outputs: list[str], *, through: frozenset[str] = frozenset()) -> MemoryPath:
    """The memory path of ``model`` between its state inputs and outputs (see module doc).
    ``through``: more op types to walk through as if they moved data (inspection walks
    through QuantizeLinear/DequantizeLinear to find them on the path)."""
    moves = DATA_MOVEMENT | through
    nodes = list(model.graph.node)
    const = constants(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for node in nodes:
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(node)
        for o in node.output:
            if o:
                producer[o] = node
    path = MemoryPath()
    on_path: set[str] = set()

    # tensors computed from the segment's content (tokens, or another graph's outputs); masks from
    # lengths/reset only gate the state (select or zero rows) and do not end the walk
    not_content = set(state_inputs) | set(CONTROL_INPUTS)
    segment_dependent = {i.name for i in model.graph.input if i.name not in not_content}
    for node in nodes:  # graph nodes are topologically sorted
        if any(i in segment_dependent for i in node.input if i):
            segment_dependent.update(o for o in node.output if o)

    # read side: forward from the state inputs
    frontier = [s for s in state_inputs]
    path.tensors.update(frontier)
    while frontier:
        t = frontier.pop()
        for node in consumers.get(t, []):
            if node.name in on_path:
                continue
            if node.op_type in MATMULS or node.domain not in ("", "ai.onnx"):
                if node.name not in path.read_nodes:
                    path.read_nodes.append(node.name)
                continue
            if node.op_type in NON_VALUE:
                continue
            others = [i for i in node.input if i and i not in path.tensors and i not in const]
            if node.op_type not in moves and any(i in segment_dependent for i in others):
                continue  # mixes the state with the segment (a residual merge): the read side ends here
            on_path.add(node.name)
            path.path_nodes.append(node.name)
            for o in node.output:
                if o and o not in path.tensors:
                    path.tensors.add(o)
                    frontier.append(o)

    # write side: backward from the state outputs
    frontier = list(state_outputs)
    path.tensors.update(frontier)
    path.written.update(frontier)
    seen_back: set[str] = set()
    reached = set(frontier)
    while frontier:
        t = frontier.pop()
        node = producer.get(t)
        if node is None or node.name in seen_back:
            continue
        seen_back.add(node.name)
        if node.op_type in MATMULS or node.domain not in ("", "ai.onnx"):
            if node.name not in path.write_nodes:
                path.write_nodes.append(node.name)
            continue
        if node.op_type in NON_VALUE:
            continue
        if node.name not in on_path:
            on_path.add(node.name)
            path.path_nodes.append(node.name)
        computed = [i for i in node.input if i and i not in const]
        if node.op_type in SUMS and len(computed) >= 2:
            continue  # a residual sum: the values were computed by the layers, not written here
        inputs = node.input[1:3] if node.op_type == "Where" else node.input  # not the condition
        for i in inputs:
            if i and i not in const and i not in reached:
                reached.add(i)
                path.tensors.add(i)
                path.written.add(i)
                frontier.append(i)
    path.path_nodes = [n for n in path.path_nodes if n not in path.read_nodes and n not in path.write_nodes]
    return path


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """onnxruntime's Python tools (onnxruntime.quantization, onnxruntime.transformers) log advice
    through loggers that defer to the root logger, and print; keep it out of the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
