"""What a quantized package's graphs hold, read from the ONNX files themselves: Q/DQ and
Cast counts, which MatMuls run in int8 or fp16, and whether anything lowers the precision
of the memory path (the proof behind the default policy)."""

from __future__ import annotations

from typing import Any

import onnx

from memx.onnxgraph import MATMULS, find_memory_path
from memx.package.files import Package
from memx.package.manifest import memory_io

QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT8_MATMULS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
LOW = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


def _low_precision_inputs(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], initializers: dict[str, onnx.TensorProto]) -> list[str]:
    """Inputs of ``node`` that arrive dequantized from int8 or cast to / stored in 16 bits."""
    low = []
    for i in node.input:
        src = producer.get(i)
        if src is not None and src.op_type == "DequantizeLinear":
            low.append(f"{i} (dequantized int8)")
        elif src is not None and src.op_type == "Cast" and any(a.name == "to" and a.i in LOW for a in src.attribute):
            low.append(f"{i} (cast to 16 bits)")
        elif i in initializers and initializers[i].data_type in LOW:
            low.append(f"{i} (low-precision weight)")
    return low


def graph_facts(model: onnx.ModelProto, state_inputs: list[str], state_outputs: list[str]) -> dict[str, Any]:
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output if o}
    initializers = {t.name: t for t in model.graph.initializer}
    path = find_memory_path(model, state_inputs, state_outputs, through=QDQ)
    on_path = set(path.path_nodes)
    by_name = {n.name: n for n in nodes}
    # nodes that round the values the state outputs are made of (not those that only read the memory)
    rounding = [n for n in on_path if any(o in path.written for o in by_name[n].output) and (by_name[n].op_type in QDQ
                or (by_name[n].op_type == "Cast" and any(a.name == "to" and a.i in LOW for a in by_name[n].attribute)))]
    projections = {n: _low_precision_inputs(by_name[n], producer, initializers) for n in set(path.read_nodes) | set(path.write_nodes) if by_name[n].op_type in MATMULS}
    matmuls = [n for n in nodes if n.op_type in MATMULS]
    return {
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in nodes),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in nodes),
        "casts": sum(n.op_type == "Cast" for n in nodes),
        "matmuls": len(matmuls) + sum(n.op_type in INT8_MATMULS for n in nodes),
        "low_precision_matmuls": sum(bool(_low_precision_inputs(n, producer, initializers)) for n in matmuls) + sum(n.op_type in INT8_MATMULS for n in nodes),
        "memory_path": {
            "read": sorted(path.read_nodes), "write": sorted(path.write_nodes),
            "rounding_nodes": sorted(rounding),  # Q/DQ or casts to 16 bits the state's values pass through
            "low_precision_projections": {k: v for k, v in sorted(projections.items()) if v},
        },
    }


def precision_facts(pkg: Package) -> dict[str, Any]:
    """Facts of every graph (the decode graphs too), and ``memory_path_intact``: no rounding node
    on the step graphs' memory path and no memory read/write projection there fed int8 or 16-bit
    values. The decode graphs only read the memory into a cache, with each weight in the
    precision the step gives it (memx.calibration.decode), so they are reported, not gated."""
    m = pkg.manifest
    graphs = {}
    for g in m.graphs + (m.decode.graphs if m.decode else []):
        proto = onnx.load(str(pkg.file(g.file)), load_external_data=False)
        graphs[g.name] = graph_facts(proto, *memory_io(m, g))
    intact = all(not graphs[g.name]["memory_path"]["rounding_nodes"] and not graphs[g.name]["memory_path"]["low_precision_projections"] for g in m.graphs)
    return {"precision": m.precision, "policy": (m.quantization or {}).get("policy"), "memory_path_intact": intact, "graphs": graphs}
