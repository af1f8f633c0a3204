"""Quantizing graphs memx did not write (tests/models/byo_models.py): nodes a method cannot
take are kept in float with the reason recorded, biases stay float (TensorRT refuses INT32
bias DequantizeLinear, which memx doctor reports), and the quantized package still passes
its precision gate over long streams."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from memx.calibration import quantize_package
from memx.exporter import export
from memx.tensorrt import diagnose
from memx.validation import compare_precision
from tests.models import byo_models as byo


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    step = byo.make_gated()
    return step, export(step, tmp_path_factory.mktemp("gated") / "pkg", verify_segments=0)


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-qdq"])
def test_a_matmul_with_a_1d_weight_is_kept_in_float_with_the_reason(method, gated, tmp_path):
    step, pkg = gated
    q = quantize_package(pkg, tmp_path / method, method=method, calib_segments=16, calib_streams=2, progress=False).package
    skipped = q.manifest.quantization["graphs"]["step"]["skipped_nodes"]
    assert len(skipped) == 1 and "has shape [16]: per-channel int8 needs a 2-D weight" in next(iter(skipped.values()))
    report = compare_precision(q, segments=128, batch=2, progress=False, reference_options={"model": step})
    assert report.gate == "logits" and report.passed, report.summary_numbers()


def test_int8_qdq_keeps_biases_float_and_tensorrt_finds_no_qdq_error(gated, tmp_path):
    _, pkg = gated
    q = quantize_package(pkg, tmp_path / "qdq", method="int8-qdq", calib_segments=16, calib_streams=2, progress=False).package
    model = onnx.load(str(q.path / "model.onnx"))
    ints = {t.name for t in model.graph.initializer if t.data_type == TensorProto.INT32}
    assert not [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in ints]
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)  # it did quantize
    assert not [f for f in diagnose(q.path).findings if f.check == "qdq" and f.severity == "error"]


def test_doctor_reports_an_int32_bias_dequantize(tmp_path):
    inits = [numpy_helper.from_array(np.ones((8, 8), np.float32), "w"), numpy_helper.from_array(np.ones(8, np.int32), "b32"),
             numpy_helper.from_array(np.array(0.01, np.float32), "s")]
    nodes = [helper.make_node("DequantizeLinear", ["b32", "s"], ["b"], name="bias_dq"), helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    errors = [f for f in diagnose(path).findings if f.check == "qdq" and f.severity == "error"]
    assert len(errors) == 1 and "INT32 constant (a quantized bias, used by Gemm)" in errors[0].message and errors[0].node == "bias_dq"
