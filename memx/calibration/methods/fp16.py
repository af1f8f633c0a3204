"""fp16: weights and activations in float16; the graph's inputs and outputs (tokens, state)
stay float32, and under the default policy the memory path computes in float32 too.
Custom memx ops stay float32 (their kernels and bodies are float32), with casts around."""

from __future__ import annotations

from typing import Any

import onnx

from memx.calibration.methods.base import GraphJob, QuantMethod, register_method
from memx.errors import QuantizationError
from memx.ops.registry import DOMAIN as OPS_DOMAIN


@register_method
class Float16(QuantMethod):
    name = "fp16"
    precision = "fp16"
    needs_calibration = False
    description = "weights and activations in fp16; graph inputs/outputs (state included) in fp32"

    def quantize(self, job: GraphJob) -> dict[str, Any]:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.load(str(job.source))
        custom = sorted({n.op_type for n in model.graph.node if n.domain == OPS_DOMAIN})
        kept = float32_only_nodes(model)
        try:
            converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=[*job.excluded_nodes, *kept],
                                                 op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(custom)))
        except Exception as e:
            raise QuantizationError(f"fp16 conversion failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        elided = elide_round_trips(converted)
        onnx.save(converted, str(job.target))
        return {"weights": "fp16", "activations": "fp16", "io": "fp32", "float32_ops": custom, "excluded_nodes": len(job.excluded_nodes),
                "round_trips_removed": elided, "skipped_nodes": kept}


def float32_only_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes ONNX Runtime runs in float32 only, kept so: {node name: reason}. Graphs memx did
    not write have them (a scatter_add is ScatterElements with reduction 'add')."""
    kept = {}
    for node in model.graph.node:
        if node.op_type in ("ScatterElements", "ScatterND"):
            reduction = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "reduction"), b"none")
            reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
            if reduction != "none" and node.name:
                kept[node.name] = f"{node.op_type} with reduction {reduction!r}: ONNX Runtime has no float16 kernel for it"
    return kept


def elide_round_trips(model: onnx.ModelProto) -> int:
    """Remove float32 -> float16 -> float32 Cast pairs: the converter puts them between two
    float32 nodes (a graph input and a kept-float32 node, or two kept nodes), where they
    would round the memory to fp16 although the policy keeps it in fp32. Consumers of the
    back-cast read the original float32 tensor instead (unless the source is known to be of
    another type: a bool or integer tensor cast to float16 and back is a conversion, kept).
    Returns how many were removed."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    types = _elem_types(model)
    graph_outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    dead: set[str] = set()
    for node in nodes:
        if node.op_type != "Cast" or _cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Cast" or _cast_to(first) != onnx.TensorProto.FLOAT16:
            continue
        if types.get(first.input[0], onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT:  # known to be another type
            continue
        if node.output[0] in graph_outputs:  # the output keeps its name: make the back-cast an Identity of the source
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = first.input[0]
        else:
            rename[node.output[0]] = first.input[0]
            dead.add(node.name)
    for node in nodes:
        node.input[:] = [rename.get(i, i) for i in node.input]
    kept = [n for n in nodes if n.name not in dead]
    used = {i for n in kept for i in n.input} | graph_outputs
    kept = [n for n in kept if not (n.op_type == "Cast" and _cast_to(n) == onnx.TensorProto.FLOAT16 and n.output[0] not in used)]
    removed = len(nodes) - len(kept)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return removed


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value whose type is known: graph inputs, initializers, Cast
    outputs and what ONNX type inference finds (unknown values are left out)."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info if v.type.tensor_type.elem_type})
    except Exception:  # noqa: BLE001 - inference is a help here; Cast outputs below still say their type
        pass
    types.update({n.output[0]: _cast_to(n) for n in model.graph.node if n.op_type == "Cast"})
    return types


def _cast_to(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), -1)
