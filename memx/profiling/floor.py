"""The floor of a step: FLOPs and bytes counted from the ONNX graph at concrete shapes,
against this machine's measured matrix-multiply peak and copy bandwidth, so a report can
say what fraction of the achievable a backend reaches.

FLOPs count multiply-adds as 2 in MatMul/Gemm (including attention's activation
products) and memx.LocalGlobalAttention (scores and weighted sum over window + memory);
elementwise ops and normalisations are counted as one operation per output element.
Bytes are what a step must move at least once: weights, graph inputs and outputs (the
state read and written included). Shapes come from one ONNX Runtime run of the graph with
every value exposed, so data-dependent shapes and custom ops are counted too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from memx.package.files import Package

_ITEMSIZE = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.INT64: 8,
             TensorProto.INT32: 4, TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.BOOL: 1}
_FREE = {"Shape", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Constant", "ConstantOfShape", "Gather", "Slice", "Concat",
         "Split", "Expand", "Range", "Cast", "QuantizeLinear", "DequantizeLinear"}


@dataclass
class GraphCost:
    flops: float
    matmul_flops: float
    weight_bytes: int
    io_bytes: int  # graph inputs + outputs (state in and out included)
    unknown_shapes: int  # nodes whose output shape is unknown (not counted)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.io_bytes


def _feeds(model: onnx.ModelProto, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Inputs of the given sizes: zeros, except ``lengths`` (full segments) and ``reset`` (True)."""
    feeds = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 1) for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if vi.name == "lengths":
            feeds[vi.name] = np.full(shape, dims.get("segment", 1), dtype=dtype)
        elif vi.name == "reset":
            feeds[vi.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _shapes(model: onnx.ModelProto, dims: dict[str, int]) -> dict[str, tuple[list[int], int]]:
    """Shape and item size of every value, from one ONNX Runtime run that exposes them all
    (custom memx ops run their reference bodies)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    outputs = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for o in node.output:
            if o and o not in outputs:
                m.graph.output.append(helper.make_empty_tensor_value_info(o))
                outputs.add(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value the graph names
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feeds = _feeds(model, dims)
    values = sess.run(names, feeds)
    out = {n: (list(v.shape), v.dtype.itemsize) for n, v in zip(names, values) if hasattr(v, "shape")}
    out.update({k: (list(v.shape), v.dtype.itemsize) for k, v in feeds.items()})
    for init in model.graph.initializer:
        out[init.name] = (list(init.dims), _ITEMSIZE.get(init.data_type, 4))
    return out


def graph_cost(model: onnx.ModelProto, dims: dict[str, int]) -> GraphCost:
    """FLOPs and bytes of one run of ``model`` with symbolic dims set to ``dims``."""
    m = model
    shapes = _shapes(m, dims)
    flops = matmul = 0.0
    unknown = 0
    for node in m.graph.node:
        if node.op_type in _FREE:
            continue
        out_shape = shapes.get(node.output[0], (None, 0))[0] if node.output else None
        if node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"):
            a = shapes.get(node.input[0], (None, 0))[0]
            if a is None or out_shape is None:
                unknown += 1
                continue
            k = a[-1] if not (node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)) else a[0]
            f = 2.0 * float(np.prod(out_shape)) * k
            flops += f
            matmul += f
        elif node.domain == "memx" and node.op_type == "LocalGlobalAttention":
            q = shapes.get(node.input[0], (None, 0))[0]  # (B, H, S, dh)
            window = next((x.i for x in node.attribute if x.name == "window"), 0)
            chunked = any(x.name == "pattern" and x.s == b"chunked" for x in node.attribute)
            causal = any(x.name == "causal" and x.i for x in node.attribute)
            mem = shapes.get(node.input[4], (None, 0))[0] if len(node.input) > 4 and node.input[4] else None  # (B, H, M, dh)
            if q is None:
                unknown += 1
                continue
            b, h, s, dh = q
            local = window if chunked else (window + 1 if causal else 2 * window + 1)
            keys = min(s, local) + (mem[2] if mem else 0)
            f = 4.0 * b * h * s * keys * dh  # scores and weighted sum
            flops += f
            matmul += f
        elif out_shape is not None:
            flops += float(np.prod(out_shape))
        else:
            unknown += 1
    weight_bytes = sum(int(np.prod(t.dims)) * _ITEMSIZE.get(t.data_type, 4) for t in m.graph.initializer)
    io = 0
    for vi in list(m.graph.input) + list(m.graph.output):
        shape, itemsize = shapes.get(vi.name, (None, 0))
        io += int(np.prod(shape)) * itemsize if shape is not None else 0
    return GraphCost(flops, matmul, weight_bytes, io, unknown)


def package_cost(pkg: Package, *, batch: int, segment_len: int) -> GraphCost:
    """The cost of one step of ``pkg`` (all its graphs)."""
    total = GraphCost(0.0, 0.0, 0, 0, 0)
    for g in pkg.manifest.graphs:
        c = graph_cost(onnx.load(str(pkg.file(g.file))), {"batch": batch, "segment": segment_len})
        total = GraphCost(total.flops + c.flops, total.matmul_flops + c.matmul_flops, total.weight_bytes + c.weight_bytes,
                          total.io_bytes + c.io_bytes, total.unknown_shapes + c.unknown_shapes)
    return total


@dataclass
class MachinePeak:
    gemm_gflops: float  # fp32 MatMul through ONNX Runtime, n x n x n, all threads
    copy_gbps: float  # large array copy (read + write counted)
    gemm_size: int
    copy_mib: int


def measure_peak(*, n: int = 1024, copy_mib: int = 256, repeats: int = 5) -> MachinePeak:
    """This machine's fp32 GEMM throughput (ONNX Runtime MatMul) and copy bandwidth (numpy)."""
    import onnxruntime as ort

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    src = np.ones(copy_mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    copy = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copy = min(copy, time.perf_counter() - t0)
    return MachinePeak(2.0 * n**3 / best / 1e9, 2 * src.nbytes / copy / 1e9, n, copy_mib)


def floor_report(cost: GraphCost, peak: MachinePeak, p50_ms: float) -> dict[str, Any]:
    """How close a measured step is to the machine: achieved FLOP rate and bandwidth as
    fractions of the measured peaks, and the floor time max(FLOPs/peak, bytes/bandwidth)."""
    seconds = p50_ms / 1e3
    compute_floor = cost.flops / (peak.gemm_gflops * 1e9)
    memory_floor = cost.bytes / (peak.copy_gbps * 1e9)
    return {
        "flops": cost.flops, "matmul_flops": cost.matmul_flops, "bytes": cost.bytes, "weight_bytes": cost.weight_bytes, "io_bytes": cost.io_bytes,
        "unknown_shapes": cost.unknown_shapes, "peak": asdict(peak),
        "achieved_gflops": cost.flops / seconds / 1e9, "fraction_of_gemm_peak": cost.flops / seconds / (peak.gemm_gflops * 1e9),
        "achieved_gbps": cost.bytes / seconds / 1e9, "fraction_of_copy_bandwidth": cost.bytes / seconds / (peak.copy_gbps * 1e9),
        "floor_ms": 1e3 * max(compute_floor, memory_floor), "bound": "compute" if compute_floor >= memory_floor else "memory",
        "measured_ms": p50_ms, "measured_over_floor": seconds / max(compute_floor, memory_floor, 1e-12),
    }
