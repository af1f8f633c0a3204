"""The memory path found on ONNX graphs, state rounding, fp16 round-trip removal, and the
precision policy: on small hand-built graphs whose answer is known."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from memx.calibration.feeds import stratified_depths
from memx.calibration.methods.fp16 import elide_round_trips
from memx.calibration.policy import PrecisionPolicy, name_nodes
from memx.onnxgraph import find_memory_path
from memx.calibration.quantize import round_state_outputs
from memx.errors import QuantizationError, RegistryError

D, M = 4, 2


def _w(name: str, shape: tuple[int, ...], seed: int = 0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _rmt_like() -> onnx.ModelProto:
    """state_in -> Where(reset) -> Concat(x) -> LN -> MatMul (read) -> residual Add -> Slice -> state_out,
    and a writer branch: MatMul (write) -> Div(norm) -> state_out.slots."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", D]),
              helper.make_tensor_value_info("reset", TensorProto.BOOL, ["b", 1, 1]),
              helper.make_tensor_value_info("state_in.memory", TensorProto.FLOAT, ["b", M, D])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", None, D]),
               helper.make_tensor_value_info("state_out.memory", TensorProto.FLOAT, ["b", None, D]),
               helper.make_tensor_value_info("state_out.slots", TensorProto.FLOAT, ["b", None, D])]
    inits = [_w("init", (1, M, D)), _w("w_read", (D, D), 1), _w("w_tok", (D, D), 2), _w("w_write", (D, D), 3), _w("ln_s", (D,), 4), _w("ln_b", (D,), 5),
             numpy_helper.from_array(np.array([0], np.int64), "start"), numpy_helper.from_array(np.array([M], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"),
             numpy_helper.from_array(np.array([1 << 30], np.int64), "big")]
    nodes = [
        helper.make_node("Where", ["reset", "init", "state_in.memory"], ["mem"]),
        helper.make_node("Concat", ["mem", "x"], ["h"], axis=1),
        helper.make_node("LayerNormalization", ["h", "ln_s", "ln_b"], ["hn"], axis=-1),
        helper.make_node("MatMul", ["hn", "w_read"], ["proj"], name="read_proj"),
        helper.make_node("MatMul", ["x", "w_tok"], ["tok"], name="token_proj"),
        helper.make_node("Add", ["h", "proj"], ["h2"], name="residual"),
        helper.make_node("Slice", ["h2", "start", "end", "axis"], ["state_out.memory"]),
        helper.make_node("Slice", ["h2", "end", "big", "axis"], ["y0"]),
        helper.make_node("Add", ["y0", "tok"], ["y"]),
        helper.make_node("MatMul", ["h2", "w_write"], ["written"], name="write_proj"),
        helper.make_node("Mul", ["written", "written"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["norm"]),
        helper.make_node("Div", ["written", "norm"], ["state_out.slots"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 18)])
    name_nodes(model)
    return model


def test_read_and_write_projections_are_found():
    model = _rmt_like()
    path = find_memory_path(model, ["state_in.memory"], ["state_out.memory", "state_out.slots"])
    assert path.read_nodes == ["read_proj"]
    assert path.write_nodes == ["write_proj"]
    assert "token_proj" not in path.protected_nodes  # reads only the segment
    assert "residual" in path.path_nodes  # the residual merge is on the path, and the walk ends there
    assert {"mem", "h", "hn", "written", "state_out.slots"} <= path.tensors
    assert "tok" not in path.tensors and "y" not in path.tensors


def test_node_names_are_unique_after_naming():
    model = _rmt_like()
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_policy_choices():
    assert PrecisionPolicy().protects_memory_path and PrecisionPolicy("fp16").protects_memory_path
    assert not PrecisionPolicy("int8").protects_memory_path
    with pytest.raises(RegistryError, match="fp32"):
        PrecisionPolicy("int4")


def _run(model: onnx.ModelProto, feeds: dict) -> dict:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _feeds() -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((2, 3, D)).astype(np.float32), "reset": np.zeros((2, 1, 1), bool),
            "state_in.memory": (10 * rng.standard_normal((2, M, D))).astype(np.float32)}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_state_rounding_keeps_the_output_name_and_rounds(precision):
    model = _rmt_like()
    exact = _run(model, _feeds())["state_out.memory"]
    scale = float(np.abs(exact).max()) / 127
    round_state_outputs(model, {"state_out.memory": "memory"}, precision, {"memory": scale})
    onnx.checker.check_model(model)
    got = _run(model, _feeds())["state_out.memory"]
    assert got.dtype == np.float32
    if precision == "fp16":
        np.testing.assert_array_equal(got, exact.astype(np.float16).astype(np.float32))
    else:
        np.testing.assert_allclose(got / scale, np.round(got / scale), atol=1e-3)  # on the int8 grid
        assert np.abs(got - exact).max() <= scale / 2 + 1e-6
    assert not np.array_equal(got, exact)


def test_int8_state_rounding_needs_a_scale():
    with pytest.raises(QuantizationError, match="scale"):
        round_state_outputs(_rmt_like(), {"state_out.memory": "memory"}, "int8", {})


def test_fp16_round_trips_are_removed_exactly():
    model = _rmt_like()
    exact = _run(model, _feeds())
    # what the fp16 converter leaves between two float32 nodes: x -> fp16 -> fp32
    for node in model.graph.node:
        if node.op_type == "Concat":
            node.input[0] = "mem_back"
    model.graph.node.insert(1, helper.make_node("Cast", ["mem"], ["mem_half"], to=TensorProto.FLOAT16, name="c1"))
    model.graph.node.insert(2, helper.make_node("Cast", ["mem_half"], ["mem_back"], to=TensorProto.FLOAT, name="c2"))
    rounded = _run(model, _feeds())
    assert not np.array_equal(rounded["state_out.memory"], exact["state_out.memory"])
    assert elide_round_trips(model) == 2
    assert not any(n.op_type == "Cast" for n in model.graph.node)
    np.testing.assert_array_equal(_run(model, _feeds())["state_out.memory"], exact["state_out.memory"])


def test_stratified_depths_cover_early_and_late_segments():
    d = stratified_depths(1000, 40)
    assert len(d) == 40 and d == sorted(set(d))
    assert d[0] == 0 and d[-1] == 999
    assert sum(x < 50 for x in d) >= 8  # dense early (log-spaced half)
    assert sum(x >= 500 for x in d) >= 10  # and late
    assert stratified_depths(10, 50) == list(range(10))
