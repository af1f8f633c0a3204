"""memx doctor --target tensorrt: each check fires on a purpose-made bad graph, stays quiet on
the good twin, and real packages (zoo fp32, fp16, int8-qdq) have no errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from memx.cli import app
from memx.errors import InputError
from memx.tensorrt import CHECKS, diagnose
from memx.tensorrt import versions as tv
from memx.zoo import zoo_entries

ZOO = [e.name for e in zoo_entries()]
F = TensorProto.FLOAT


def _save(tmp_path, nodes, inputs, outputs, inits=(), functions=(), opset=18, name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _vi(name, dtype=F, shape=("batch", 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _w(name, shape=(8, 8)):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _findings(path, check, **kw):
    return [f for f in diagnose(path, **kw).findings if f.check == check]


# --- one bad graph per check -------------------------------------------------------------------
def bad_unsupported_ops(tmp_path):
    ints = [numpy_helper.from_array(np.ones((8, 8), np.int8), "w8")]
    x = helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 8])
    return _save(tmp_path, [helper.make_node("MatMulInteger", ["x", "w8"], ["y"], name="mmi")], [x], [y], ints), {}


def bad_io_dtypes(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 8])
    return _save(tmp_path, [helper.make_node("Identity", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 8])]), {}


def bad_dynamic_shapes(tmp_path):
    nodes = [helper.make_node("Identity", ["state_in.m"], ["state_out.m"]), helper.make_node("Identity", ["x"], ["y"])]
    return _save(tmp_path, nodes, [_vi("state_in.m", shape=("batch", "slots")), _vi("x")], [_vi("state_out.m", shape=("batch", "slots")), _vi("y")]), {}


def bad_custom_ops(tmp_path):
    node = helper.make_node("Mystery", ["x"], ["y"], domain="memx", name="mystery")
    return _save(tmp_path, [node], [_vi("x")], [_vi("y")]), {}


def bad_opset(tmp_path):
    return _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=21), {"trt_version": "10.3"}


def bad_qdq(tmp_path):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"), helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    return _save(tmp_path, nodes, [_vi("x")], [_vi("y")], inits), {}


BAD = {"unsupported_ops": bad_unsupported_ops, "io_dtypes": bad_io_dtypes, "dynamic_shapes": bad_dynamic_shapes, "custom_ops": bad_custom_ops,
       "opset": bad_opset, "qdq": bad_qdq}


def test_every_registered_check_has_a_bad_graph():
    assert set(BAD) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_check_fires_on_its_bad_graph_with_a_fix(name, tmp_path):
    path, kw = BAD[name](tmp_path)
    found = _findings(path, name, **kw)
    assert found, f"check {name} found nothing in its bad graph"
    assert all(f.fix for f in found if f.severity != "info")


def test_integer_ops_are_refused_with_the_qdq_fix(tmp_path):
    path, _ = bad_unsupported_ops(tmp_path)
    [f] = _findings(path, "unsupported_ops")
    assert f.severity == "error" and "MatMulInteger" in f.message and "int8-qdq" in f.fix and f.node == "mmi"


def test_a_real_int8_dynamic_package_is_refused(quantized):
    report = diagnose(quantized("memtr-majority", "int8-dynamic").path)
    assert not report.ok
    assert {f.message.split()[-1] for f in report.errors} >= {"MatMulInteger", "DynamicQuantizeLinear"}


def test_the_decode_graphs_are_diagnosed_too(quantized):
    """memx generate's graphs get the same checks as the step: an int8-dynamic package is refused in all three."""
    report = diagnose(quantized("rmt-ar", "int8-dynamic").path)
    assert {f.graph for f in report.errors} == {"step", "decode_open", "decode"}


def test_qdq_rules(tmp_path):
    path, _ = bad_qdq(tmp_path)
    msgs = [f.message for f in _findings(path, "qdq")]
    assert any("UINT8" in m for m in msgs)
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nonzero = numpy_helper.from_array(np.array(3, np.int8), "zp")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zp")
    q_to_relu = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), helper.make_node("Relu", ["q"], ["y"])]
    found = _findings(_save(tmp_path, q_to_relu, [_vi("x")], [helper.make_tensor_value_info("y", TensorProto.INT8, ["batch", 8])], [s, zero], name="qr.onnx"), "qdq")
    assert [f.severity for f in found] == ["error"] and "Q->DQ pairs" in found[0].message
    pair = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
            helper.make_node("MatMul", ["dq", "w"], ["y"])]
    assert _findings(_save(tmp_path, pair, [_vi("x")], [_vi("y")], [s, zero, _w("w")], name="ok.onnx"), "qdq") == []
    found = _findings(_save(tmp_path, pair, [_vi("x")], [_vi("y")], [s, nonzero, _w("w")], name="nz.onnx"), "qdq")
    assert any("non-zero zero point" in f.message for f in found)


def test_custom_op_rules_follow_the_tensorrt_version(tmp_path):
    body = helper.make_function("memx", "Mystery", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])], [helper.make_opsetid("", 18)])
    node = helper.make_node("Mystery", ["x"], ["y"], domain="memx", name="mystery", plugin_namespace="memx", plugin_version="1")
    path = _save(tmp_path, [node], [_vi("x")], [_vi("y")], functions=[body], name="fn.onnx")
    [old] = _findings(path, "custom_ops", trt_version="8.6")
    assert old.severity == "error" and "cannot import model-local functions" in old.message
    [new] = _findings(path, "custom_ops", trt_version="10.3")
    assert new.severity == "info" and "reference body" in new.message
    no_body, _ = bad_custom_ops(tmp_path)
    [missing] = _findings(no_body, "custom_ops", trt_version="10.3")
    assert missing.severity == "error" and "neither a function body" in missing.message


def test_version_rules_table():
    V = tv.parse_version
    assert not tv.local_functions_supported(V("8.6")) and tv.local_functions_supported(V("9.0"))
    assert not tv.plugin_overrides_function(V("10.6")) and tv.plugin_overrides_function(V("10.7"))
    assert tv.plugin_needs_namespace_attribute(V("10.15")) and not tv.plugin_needs_namespace_attribute(V("10.14"))
    assert tv.onnx_attention_op(V("10.14")) and not tv.onnx_attention_op(V("10.13"))
    assert tv.strongly_typed_only(V("11.0")) and not tv.strongly_typed_only(V("10.15"))
    assert V("10.10") > V("10.9") and str(V("10.3.0.26")) == "10.3"
    with pytest.raises(InputError, match="expected MAJOR.MINOR"):
        tv.parse_version("latest")


def test_int64_io_and_attention_depend_on_the_version(tmp_path):
    x = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "segment"])
    path = _save(tmp_path, [helper.make_node("Identity", ["tokens"], ["y"])], [x], [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "segment"])], name="i64.onnx")
    assert [f.severity for f in _findings(path, "io_dtypes", trt_version="8.6")] == ["warning", "warning"]
    assert _findings(path, "io_dtypes", trt_version="10.3") == []
    att = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="att")
    apath = _save(tmp_path, [att], [_vi("q", shape=(1, 2, 4, 8)), _vi("k", shape=(1, 2, 4, 8)), _vi("v", shape=(1, 2, 4, 8))], [_vi("y", shape=(1, 2, 4, 8))], opset=23, name="att.onnx")
    assert any("10.14" in f.message for f in _findings(apath, "unsupported_ops", trt_version="10.8"))
    assert _findings(apath, "unsupported_ops", trt_version="10.14") == []


def test_dynamic_shape_findings(tmp_path):
    path, _ = bad_dynamic_shapes(tmp_path)
    found = _findings(path, "dynamic_shapes")
    assert [f.severity for f in found] == ["error"] and "state input 'state_in.m'" in found[0].message
    odd = _save(tmp_path, [helper.make_node("NonZero", ["x"], ["y"])], [_vi("x", shape=("batch", "width"))], [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "n"])], name="nz.onnx")
    msgs = [f.message for f in _findings(odd, "dynamic_shapes")]
    assert any("'width'" in m for m in msgs) and any("data-dependent" in m for m in msgs)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_packages_have_no_errors(name, package_of, quantized):
    for pkg in (package_of(name), quantized(name, "fp16"), quantized(name, "int8-qdq")):
        report = diagnose(pkg.path)
        assert report.ok, [f.message for f in report.errors]
        assert not [f for f in report.findings if f.check == "qdq"], "the default policy keeps Q/DQ off the memory path"


def test_quantized_memory_is_flagged(quantized):
    report = diagnose(quantized("rmt-ar", "int8-qdq", state="int8").path)
    assert any(f.check == "qdq" and "memory state" in f.message for f in report.findings)


def test_cli_exit_codes_and_json(tmp_path, package_of):
    runner = CliRunner()
    path, _ = bad_unsupported_ops(tmp_path)
    bad = runner.invoke(app, ["doctor", str(path)])
    assert bad.exit_code == 1 and "MatMulInteger" in bad.output and "fix:" in bad.output
    good = runner.invoke(app, ["doctor", str(package_of("rmt-tiny").path), "--json"])
    assert good.exit_code == 0
    data = json.loads(good.output)
    assert data["format"] == "memx.doctor" and data["ok"] is True
    unknown = runner.invoke(app, ["doctor", str(path), "--trt-version", "ten"])
    assert unknown.exit_code == 2 and "expected MAJOR.MINOR" in unknown.output
