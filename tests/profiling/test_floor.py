"""FLOP and byte counting on graphs whose cost is known, and the floor arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from memx.profiling.floor import MachinePeak, floor_report, graph_cost, package_cost


def _graph():
    k, n = 8, 6
    w = numpy_helper.from_array(np.ones((k, n), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "y"], ["z"]), helper.make_node("Reshape", ["z", "shape"], ["r"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "segment", k])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", "segment", n])],
        [w, numpy_helper.from_array(np.array([0, 0, n], np.int64), "shape")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_flops_and_bytes_of_a_known_graph():
    c = graph_cost(_graph(), {"batch": 3, "segment": 5})
    assert c.matmul_flops == 2 * 3 * 5 * 8 * 6  # MatMul: 2 * B*S*N outputs * K
    assert c.flops == c.matmul_flops + 3 * 5 * 6  # Add: one per output element; Reshape is free
    assert c.weight_bytes == 8 * 6 * 4 + 3 * 8  # w (fp32) and the shape constant (int64)
    assert c.io_bytes == (3 * 5 * 8 + 3 * 5 * 6) * 4 and c.unknown_shapes == 0


def test_floor_arithmetic():
    c = graph_cost(_graph(), {"batch": 1, "segment": 1})
    peak = MachinePeak(gemm_gflops=1e-6, copy_gbps=1.0, gemm_size=8, copy_mib=1)  # 1000 FLOP/s: compute-bound
    f = floor_report(c, peak, p50_ms=1000 * c.flops / 500)  # half the peak rate
    assert f["bound"] == "compute" and f["floor_ms"] == pytest.approx(1000 * c.flops / 1000)
    assert f["fraction_of_gemm_peak"] == pytest.approx(0.5) and f["measured_over_floor"] == pytest.approx(2.0)


def test_package_cost_grows_with_batch_and_segment(package_of):
    pkg = package_of("gmat-tiny")  # a memx custom op is counted too
    small, large = package_cost(pkg, batch=1, segment_len=8), package_cost(pkg, batch=2, segment_len=16)
    assert 2.5 * small.matmul_flops < large.matmul_flops < 4.5 * small.matmul_flops  # B x2, S x2 (memory tokens fixed)
    assert small.unknown_shapes == 0  # shapes flow through the custom op
    assert small.weight_bytes == large.weight_bytes > 0 and large.io_bytes > small.io_bytes
