"""Precision policy for the memory path (DESIGN.md §6).

The *memory path* of a graph (the tensors that carry state values, the projections that
read them and the computations that write them) is found on the ONNX graph itself by
``memx.onnxgraph.find_memory_path``, so it works for every family without annotations.

Under the default policy (state precision fp32) these MatMuls are excluded from int8 and
fp16, and no Q/DQ or Cast ever touches a tensor of the path, so the recurrent memory is
neither rounded nor recomputed in low precision. ``fp16`` and ``int8`` state policies
quantize the path too and round the stored state every step, for experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from memx.errors import expect_choice
from memx.onnxgraph import MATMULS, constants

STATE_PRECISIONS = ("fp32", "fp16", "int8")

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
    const = constants(model)
    return [n.name for n in model.graph.node if n.op_type in MATMULS and not any(i in const for i in n.input if i)]
