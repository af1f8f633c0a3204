"""Precision policy for the memory path (DESIGN.md §6).

The *memory path* of a graph is found on the ONNX graph itself, so it works for every
family without per-model annotations:

- **read side**: from each state input forward through ops that carry the state's values
  without mixing in the segment (data movement such as Reshape/Concat/Slice/Where, per-row
  normalisation, affine maps with constants) up to the first MatMul/Gemm (the *memory read
  projections*) or custom op; a residual merge with token-dependent values ends the walk;
- **write side**: from each state output backward through the same kind of ops (and
  products/normalisations, e.g. Memformer's Biased Memory Normalization) up to the
  MatMul/Gemm that computed the written values (the *memory write computations*); a sum of
  two computed values (a residual Add) ends the walk.

Under the default policy (state precision fp32) these MatMuls are excluded from int8 and
fp16, and no Q/DQ or Cast ever touches a tensor of the path, so the recurrent memory is
neither rounded nor recomputed in low precision. ``fp16`` and ``int8`` state policies
quantize the path too and round the stored state every step, for experiments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from memx.errors import expect_choice

STATE_PRECISIONS = ("fp32", "fp16", "int8")

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

    @property
    def protected_nodes(self) -> list[str]:
        """Nodes kept out of low precision under the default policy."""
        return sorted(set(self.read_nodes) | set(self.write_nodes) | set(self.path_nodes))

    def to_dict(self) -> dict[str, list[str]]:
        return {"read": sorted(self.read_nodes), "write": sorted(self.write_nodes), "other": sorted(self.path_nodes)}


@dataclass(frozen=True)
class PrecisionPolicy:
    """What precision the memory path gets. ``state`` is the precision the carried state is
    stored at between steps (the state tensors still cross the API as float32)."""

    state: str = "fp32"

    def __post_init__(self) -> None:
        if self.state not in STATE_PRECISIONS:
            raise expect_choice("state precision", self.state, list(STATE_PRECISIONS))

    @property
    def protects_memory_path(self) -> bool:
        return self.state == "fp32" or self.state == "fp16"

    def describe(self) -> str:
        return {
            "fp32": "memory path excluded from quantization; state stored in fp32",
            "fp16": "memory read/write projections kept in float; state rounded to fp16 every step",
            "int8": "memory path quantized like the rest; state rounded to int8 (per-tensor, calibrated on rollouts) every step",
        }[self.state]


def name_nodes(model: onnx.ModelProto, prefix: str = "memx_node") -> None:
    """Give every unnamed node of the main graph a unique name (quantizers address nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{prefix}_{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


FOLDABLE = {"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"}


def fold_constant_weights(model: onnx.ModelProto) -> int:
    """Replace layout ops applied to initializers (a weight transposed at run time, as
    torch.onnx leaves large weights) by the resulting initializer, so quantizers see
    MatMul(x, W) with W a weight (per-channel int8) rather than an activation. Exact; returns
    how many nodes were folded."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {t.name: t for t in model.graph.initializer}
    folded, kept = 0, []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in FOLDABLE and node.domain in ("", "ai.onnx") and inputs and all(i in inits for i in inputs) and len(node.output) == 1:
            feeds = {i: numpy_helper.to_array(inits[i]) for i in inputs}
            (value,) = ReferenceEvaluator(node).run(None, feeds)
            tensor = numpy_helper.from_array(value, node.output[0])
            model.graph.initializer.append(tensor)
            inits[node.output[0]] = tensor
            folded += 1
        else:
            kept.append(node)
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        used = {i for n in kept for i in n.input} | {o.name for o in model.graph.output}
        used |= {i for f in model.functions for n in f.node for i in n.input}
        unused = [t for t in model.graph.initializer if t.name not in used]
        for t in unused:
            model.graph.initializer.remove(t)
    return folded


def unshare_initializers(model: onnx.ModelProto, nodes: list[str]) -> int:
    """Give ``nodes`` their own copy of every initializer they share with other nodes (a
    projection applied to the memory and to the tokens with one weight), so quantizing the
    other users' weight cannot reach the protected node. Returns how many copies were made."""
    protected = set(nodes)
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for i in node.input:
            users.setdefault(i, set()).add(node.name)
    inits = {t.name: t for t in model.graph.initializer}
    copies = 0
    for node in model.graph.node:
        if node.name not in protected:
            continue
        for k, i in enumerate(node.input):
            if i in inits and users[i] - protected:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[i])
                copy.name = f"{i}.memx_float"
                if copy.name not in inits:
                    model.graph.initializer.append(copy)
                    inits[copy.name] = copy
                    copies += 1
                node.input[k] = copy.name
    return copies


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes with no constant operand (attention scores Q·Kᵀ and P·V): left in
    float by default, as TensorRT's attention fusion and ModelOpt's ``disable_mha_qdq`` do;
    on CPU their activation Q/DQ costs more than the int8 product saves."""
    const = _constants(model)
    return [n.name for n in model.graph.node if n.op_type in MATMULS and not any(i in const for i in n.input if i)]


def _constants(model: onnx.ModelProto) -> set[str]:
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
    const = _constants(model)
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
