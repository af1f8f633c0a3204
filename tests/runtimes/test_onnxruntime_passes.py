"""memx's ONNX Runtime graph passes (memx.runtimes.onnxruntime_passes): each rewrite gives the
function the unfused graph gives (to float rounding) on graphs written the way other projects
write them, leaves graphs it does not recognise as they were, and the backend applies them in
memory without touching the package."""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from memx import runtimes
from memx.errors import InputError, RegistryError
from memx.runtimes.onnxruntime_passes import PASSES, register_pass, run_passes


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _rewritten(model: onnx.ModelProto, passes: list[str]) -> tuple[onnx.ModelProto, dict[str, int]]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    done = run_passes(m, passes)
    onnx.checker.check_model(m)
    return m, done


# --- attention -------------------------------------------------------------------------------


class HFStyleAttention(torch.nn.Module):
    """Attention as Hugging Face models write it: a Div by sqrt(d), an additive mask made from a
    padding mask, dropout, heads by view/transpose, a dict of outputs."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.query, self.key, self.value, self.dense = (torch.nn.Linear(d, d) for _ in range(4))
        self.dropout = torch.nn.Dropout(0.1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.h, self.dh).transpose(1, 2)  # [B, S, D] -> [B, H, S, dh]

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        kv_in = torch.cat([memory, hidden], dim=1)  # [B, M + S, D]
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(kv_in)), self._heads(self.value(kv_in))
        scores = torch.matmul(q, k.transpose(-1, -2)) / (self.dh ** 0.5)  # [B, H, S, M + S]
        extended = (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
        probs = self.dropout(torch.softmax(scores + extended, dim=-1))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(hidden.shape)  # [B, S, D]
        out = self.dense(ctx)
        return {"hidden": out + hidden, "memory": out[:, : memory.shape[1]]}


def _hf_graph(tmp_path) -> onnx.ModelProto:
    torch.manual_seed(0)
    model = HFStyleAttention().eval()
    b, s, m = 2, 6, 3
    args = (torch.randn(b, s, 32), torch.randn(b, m, 32), torch.ones(b, m + s, dtype=torch.int64))
    path = tmp_path / "hf.onnx"
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=512)
    torch.onnx.export(model, args, str(path), input_names=["hidden", "memory", "attention_mask"], output_names=["hidden_out", "memory_out"],
                      dynamic_shapes={"hidden": {0: batch, 1: seq}, "memory": {0: batch}, "attention_mask": {0: batch, 1: seq + m}},
                      opset_version=18, dynamo=True)
    return onnx.load(str(path))


def _hf_feeds(rng: np.random.Generator, b: int = 3, s: int = 7, m: int = 3) -> dict[str, np.ndarray]:
    mask = np.ones((b, m + s), np.int64)
    mask[-1, m + 4:] = 0  # a padded stream
    return {"hidden": rng.standard_normal((b, s, 32), dtype=np.float32), "memory": rng.standard_normal((b, m, 32), dtype=np.float32), "attention_mask": mask}


def test_hf_style_attention_becomes_multi_head_attention_with_the_same_outputs(tmp_path):
    model = _hf_graph(tmp_path)
    fused, done = _rewritten(model, ["attention"])
    assert done == {"attention": 1}
    assert _ops(fused)["MultiHeadAttention"] == 1 and _ops(fused)["Softmax"] == 0
    a, b = _session(model), _session(fused)
    rng = np.random.default_rng(0)
    for _ in range(20):  # shapes change between calls: batch, segment, padding
        feeds = _hf_feeds(rng, b=int(rng.integers(1, 4)), s=int(rng.integers(1, 9)))
        feeds["attention_mask"][:, :3] = 1
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def _attention_graph(mask: str, scale: str, probs_out: bool = False) -> onnx.ModelProto:
    """Scaled dot-product attention written with ops, heads H=2 of dh=4: q [B,S,8], kv [B,L,8];
    ``mask``: "where" (boolean keep mask, fill -1e4), "add" (additive bias [B,1,S,L]) or "none";
    ``scale``: "mul", "div" or "none"."""
    nodes, inits = [], [numpy_helper.from_array(np.array([0, 0, 2, 4], np.int64), "heads"), numpy_helper.from_array(np.array([0, 0, 8], np.int64), "flat")]
    nodes += [helper.make_node("Reshape", ["q", "heads"], ["qr"]), helper.make_node("Transpose", ["qr"], ["qh"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["k", "heads"], ["kr"]), helper.make_node("Transpose", ["kr"], ["kh"], perm=[0, 2, 3, 1]),
              helper.make_node("Reshape", ["v", "heads"], ["vr"]), helper.make_node("Transpose", ["vr"], ["vh"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["qh", "kh"], ["s0"])]
    x = "s0"
    if scale != "none":
        inits.append(numpy_helper.from_array(np.array(0.5 if scale == "mul" else 2.0, np.float32), "c"))
        nodes.append(helper.make_node("Mul" if scale == "mul" else "Div", [x, "c"], ["s1"]))
        x = "s1"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", s, 8]) for n, s in (("q", "S"), ("k", "L"), ("v", "L"))]
    if mask == "where":
        inits.append(numpy_helper.from_array(np.array(-1e4, np.float32), "fill"))
        nodes += [helper.make_node("Shape", [x], ["sx"]), helper.make_node("Expand", ["fill", "sx"], ["full"]), helper.make_node("Where", ["keep", x, "full"], ["s2"])]
        inputs.append(helper.make_tensor_value_info("keep", TensorProto.BOOL, ["B", 1, 1, "L"]))
        x = "s2"
    elif mask == "add":
        nodes.append(helper.make_node("Add", [x, "bias"], ["s2"]))
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["B", 1, "S", "L"]))
        x = "s2"
    nodes += [helper.make_node("Softmax", [x], ["p"], axis=-1), helper.make_node("MatMul", ["p", "vh"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["ct", "flat"], ["out"])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "S", 8])]
    if probs_out:
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["B", 2, "S", "L"]))
    g = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _attention_feeds(rng: np.random.Generator, model: onnx.ModelProto, b: int = 2, s: int = 5, length: int = 7) -> dict[str, np.ndarray]:
    feeds = {"q": rng.standard_normal((b, s, 8), dtype=np.float32), "k": rng.standard_normal((b, length, 8), dtype=np.float32),
             "v": rng.standard_normal((b, length, 8), dtype=np.float32)}
    names = {i.name for i in model.graph.input}
    if "keep" in names:
        keep = np.ones((b, 1, 1, length), bool)
        keep[0, ..., length - 2:] = False
        feeds["keep"] = keep
    if "bias" in names:
        feeds["bias"] = np.where(rng.random((b, 1, s, length)) < 0.3, -1e4, 0.0).astype(np.float32)
        feeds["bias"][..., 0] = 0.0  # every row keeps a key
    return feeds


@pytest.mark.parametrize("mask", ["where", "add", "none"])
@pytest.mark.parametrize("scale", ["mul", "div", "none"])
def test_attention_forms_fuse_and_agree(mask, scale):
    model = _attention_graph(mask, scale)
    fused, done = _rewritten(model, ["attention"])
    assert done == {"attention": 1} and _ops(fused)["MultiHeadAttention"] == 1 and _ops(fused)["Transpose"] == 0
    mha = next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
    attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
    assert attrs["num_heads"] == 2
    assert attrs["scale"] == {"mul": 0.5, "div": 0.5, "none": 1.0}[scale]  # none written: 1, not MultiHeadAttention's 1/sqrt(dh)
    rng = np.random.default_rng(1)
    for b, s, length in ((2, 5, 7), (1, 1, 3), (3, 8, 8)):
        feeds = _attention_feeds(rng, model, b, s, length)
        [want], [got] = _session(model).run(["out"], feeds), _session(fused).run(["out"], feeds)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_whose_probabilities_are_read_elsewhere_is_left_as_it_is():
    model = _attention_graph("where", "mul", probs_out=True)  # e.g. a sticky memory keeps the attention weights
    fused, done = _rewritten(model, ["attention"])
    assert done == {"attention": 0} and fused == model


def test_a_pass_that_fails_leaves_the_graph_as_it_was(caplog):
    def broken(model: onnx.ModelProto) -> int:
        del model.graph.node[:3]  # half a rewrite, then a pattern nobody foresaw
        raise ValueError("unforeseen pattern")

    register_pass("test-broken", "fails half way")(broken)
    try:
        model = _attention_graph("add", "div")
        m = onnx.ModelProto()
        m.CopyFrom(model)
        assert run_passes(m, ["test-broken", "attention"]) == {"test-broken": 0, "attention": 1}
        assert "test-broken" in caplog.text and "unforeseen pattern" in caplog.text
        feeds = _attention_feeds(np.random.default_rng(2), model)
        np.testing.assert_allclose(_session(m).run(["out"], feeds)[0], _session(model).run(["out"], feeds)[0], rtol=1e-5, atol=1e-5)
    finally:
        del PASSES["test-broken"]


# --- int8 MatMul ------------------------------------------------------------------------------


def _qdq_graph(rng: np.random.Generator) -> onnx.ModelProto:
    """x -> two consumers, each with its own Q/DQ pair of the same scale (memx's int8-qdq form):
    Q/DQ x @ DQ(W1 int8, per-column scale) + b1, and Q/DQ x @ DQ(W2) without a bias."""
    w1, w2 = rng.integers(-127, 128, (16, 12)).astype(np.int8), rng.integers(-127, 128, (16, 6)).astype(np.int8)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array((rng.random(12) * 0.01 + 0.001).astype(np.float32), "s1"), numpy_helper.from_array(np.array(0.002, np.float32), "s2"),
             numpy_helper.from_array(np.zeros(12, np.int8), "z1"), numpy_helper.from_array(np.array(0, np.int8), "z2"),
             numpy_helper.from_array(np.array(0.03, np.float32), "sx"), numpy_helper.from_array(np.array(0, np.int8), "zx"),
             numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "b1")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq1"], axis=1), helper.make_node("DequantizeLinear", ["xq1", "sx", "zx"], ["xd1"], axis=1),
             helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq2"], axis=2), helper.make_node("DequantizeLinear", ["xq2", "sx", "zx"], ["xd2"], axis=2),
             helper.make_node("DequantizeLinear", ["w1", "s1", "z1"], ["w1d"], axis=1), helper.make_node("DequantizeLinear", ["w2", "s2", "z2"], ["w2d"]),
             helper.make_node("MatMul", ["xd1", "w1d"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["y1"]),
             helper.make_node("MatMul", ["xd2", "w2d"], ["y2"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 16])],
                          [helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["B", "S", 12]), helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["B", "S", 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def test_qdq_matmuls_become_matmul_integer_to_float_on_one_uint8_activation_with_the_bias_folded():
    rng = np.random.default_rng(3)
    model = _qdq_graph(rng)
    fused, done = _rewritten(model, ["int8-matmul"])
    ops = _ops(fused)
    assert done == {"int8-matmul": 2} and ops["MatMulIntegerToFloat"] == 2 and ops["QuantizeLinear"] == 1 and ops["Add"] == 0 and ops["MatMul"] == 0
    mm = [n for n in fused.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert mm[0].input[0] == mm[1].input[0] and "b1" in mm[0].input  # one uint8 copy; the bias inside
    q = next(n for n in fused.graph.node if n.op_type == "QuantizeLinear")
    assert numpy_helper.to_array(next(t for t in fused.graph.initializer if t.name == q.input[2])).dtype == np.uint8
    for shape in ((2, 5, 16), (1, 1, 16), (4, 9, 16)):
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        x[0, 0, :3] = [100.0, -100.0, 0.015]  # saturating and half-way values round alike in int8 and uint8
        for want, got in zip(_session(model).run(None, {"x": x}), _session(fused).run(None, {"x": x})):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_u8u8_form_gives_the_same_values_with_uint8_weights_converted_once(monkeypatch):
    """int8-matmul-u8u8 (x86 CPUs without VNNI): weights w + 128 with zero point + 128, one
    uint8 copy per weight even when two MatMuls share it; outputs equal the Q/DQ graph's."""
    rng = np.random.default_rng(5)
    model = _qdq_graph(rng)
    for t in model.graph.initializer:
        if t.name == "z1":  # an asymmetric per-column weight zero point: the shift must carry it
            t.CopyFrom(numpy_helper.from_array(rng.integers(-3, 4, 12).astype(np.int8), "z1"))
    fused, done = _rewritten(model, ["int8-matmul-u8u8"])
    assert done == {"int8-matmul-u8u8": 2}
    inits = {t.name: numpy_helper.to_array(t) for t in fused.graph.initializer}
    for mm in (n for n in fused.graph.node if n.op_type == "MatMulIntegerToFloat"):
        w, wz = inits[mm.input[1]], inits[mm.input[5]]
        assert w.dtype == np.uint8 and wz.dtype == np.uint8 and wz.shape == inits[mm.input[3]].shape
    assert "w1" not in inits and "w2" not in inits  # the int8 weights are gone, not kept beside their copies
    for shape in ((2, 5, 16), (3, 7, 16)):
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        x[0, 0, :2] = [100.0, -100.0]
        for want, got in zip(_session(model).run(None, {"x": x}), _session(fused).run(None, {"x": x})):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    from memx.runtimes import onnxruntime_passes as passes

    monkeypatch.setattr(passes, "uses_vpmaddubsw", lambda: True)
    assert "int8-matmul-u8u8" in passes.default_passes() and "int8-matmul" not in passes.default_passes()
    monkeypatch.setattr(passes, "uses_vpmaddubsw", lambda: False)
    assert "int8-matmul" in passes.default_passes() and "int8-matmul-u8u8" not in passes.default_passes()


def test_qdq_matmul_with_an_asymmetric_or_unknown_activation_is_left_to_onnx_runtime():
    rng = np.random.default_rng(4)
    model = _qdq_graph(rng)
    for t in model.graph.initializer:
        if t.name == "zx":
            t.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), "zx"))  # a uint8 activation: not the int8 form this pass reads
    fused, done = _rewritten(model, ["int8-matmul"])
    assert done == {"int8-matmul": 0} and fused == model


# --- the backend -----------------------------------------------------------------------------


def _digest(path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def test_backend_applies_the_passes_in_memory_and_long_streams_agree(package_of):
    pkg = package_of("memtr-majority")
    before = _digest(pkg.path)
    plain = runtimes.open(pkg, backend="onnxruntime")  # the default: the graph as written
    fused = runtimes.open(pkg, backend="onnxruntime", graph_passes="auto")
    applied = fused.backend.describe()["graph_passes"]
    assert applied["step"]["attention"] >= 1 and applied["step"]["gelu"] >= 1
    assert plain.backend.describe()["graph_passes"] == {}
    assert _digest(pkg.path) == before  # the package's files are what they were
    worst_out, worst_state = worst_differences(plain, fused, segments=300, vocab=8, reset_every=97, seed=0)
    assert worst_out < 1e-4 and worst_state < 1e-4, (worst_out, worst_state)


def worst_differences(a_rt: runtimes.Runtime, b_rt: runtimes.Runtime, *, segments: int, vocab: int, reset_every: int, seed: int) -> tuple[float, float]:
    """The largest |a - b| of the float outputs and of the state, two runtimes stepping the same
    2 streams (the second with partial segments, the first reset every ``reset_every``)."""
    rng = np.random.default_rng(seed)
    a, b = a_rt.stream(2), b_rt.stream(2)
    seg = a_rt.manifest.segment["max"]
    worst_out = worst_state = 0.0
    for i in range(segments):
        tokens = rng.integers(0, vocab, (2, seg))
        lengths = np.array([seg, int(rng.integers(1, seg + 1))])
        reset = np.array([i % reset_every == reset_every - 1, False])
        oa, ob = a.step(tokens, lengths, reset), b.step(tokens, lengths, reset)
        worst_out = max(worst_out, max(float(np.abs(oa[k] - ob[k]).max()) for k in oa if oa[k].dtype.kind == "f"))
        worst_state = max(worst_state, max(float(np.abs(a.state[k] - b.state[k]).max()) for k in a.state))
    return worst_out, worst_state


def test_backend_refuses_an_unknown_pass_by_name(package_of):
    with pytest.raises(RegistryError, match="unknown onnxruntime graph pass 'atention'") as info:
        runtimes.open(package_of("rmt-tiny"), backend="onnxruntime", graph_passes="atention,gelu")
    assert "attention" in info.value.expected and info.value.hint == "did you mean 'attention'?"
    with pytest.raises(InputError, match="graph_passes") as info:
        runtimes.open(package_of("rmt-tiny"), backend="onnxruntime", graph_passes=3)
    assert info.value.actual == "3"


def test_passes_are_registered_with_descriptions():
    assert {"attention", "gelu", "int8-matmul", "int8-matmul-u8u8"} <= set(PASSES.names())
    assert all(PASSES.get(n).description for n in PASSES.names())


def test_one_mask_bias_serves_layers_of_the_same_sizes_and_not_queries_of_another_length():
    """Two attentions reading one keep-mask: queries of S and S2 tokens reshaped with a constant
    [0, 0, H, dh] shape (S comes from each input) get a bias each; layers reshaping with one
    computed shape tensor (memx's exports) share one."""
    one = _attention_graph("where", "mul")
    g = one.graph
    second = [onnx.NodeProto() for _ in g.node]
    for src, dst in zip(g.node, second):
        dst.CopyFrom(src)
        dst.name = src.name + "_2" if src.name else ""
        dst.input[:] = [i if i in ("k", "v", "keep", "heads", "flat", "c", "fill") else ("q2" if i == "q" else i + "_2") for i in src.input]
        dst.output[:] = [o + "_2" for o in src.output]
    g.node.extend(second)
    g.input.append(helper.make_tensor_value_info("q2", TensorProto.FLOAT, ["B", "S2", 8]))
    g.output.append(helper.make_tensor_value_info("out_2", TensorProto.FLOAT, ["B", "S2", 8]))
    fused, done = _rewritten(one, ["attention"])
    assert done == {"attention": 2} and _ops(fused)["Expand"] == 2  # one bias per query length
    rng = np.random.default_rng(5)
    feeds = _attention_feeds(rng, one, 2, 5, 7)
    feeds["q2"] = rng.standard_normal((2, 3, 8), dtype=np.float32)
    for want, got in zip(_session(one).run(["out", "out_2"], feeds), _session(fused).run(["out", "out_2"], feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_memx_export_shares_one_mask_bias_across_its_layers(package_of):
    model = onnx.load(str(package_of("memtr-majority").file("model.onnx")))
    fused, done = _rewritten(model, ["attention"])
    assert done["attention"] >= 2 and _ops(fused)["Expand"] <= _ops(model)["Expand"] - done["attention"] + 1


def test_a_quantize_without_zero_point_is_uint8_and_not_taken_for_int8():
    """QuantizeLinear with no zero point (and no output_dtype) gives uint8 in [0, 255]: reading it
    as int8 with zero point 0 would stop clipping negative values."""
    rng = np.random.default_rng(6)
    model = _qdq_graph(rng)
    for n in model.graph.node:
        if n.input and n.input[0] == "x" and n.op_type == "QuantizeLinear":
            del n.input[2]
        if n.op_type == "DequantizeLinear" and n.input[0].startswith("xq"):
            del n.input[2]
    fused, done = _rewritten(model, ["int8-matmul"])
    assert done == {"int8-matmul": 0} and fused == model


def test_a_reshape_that_splits_the_sequence_instead_of_the_width_is_not_attention():
    """[B, S, D] = [1, 16, 8] reshaped to [1, 4, 4, 8]: four rows of S, not heads of D."""
    model = _attention_graph("none", "mul")
    for t in model.graph.initializer:
        if t.name == "heads":
            t.CopyFrom(numpy_helper.from_array(np.array([1, 4, 4, 8], np.int64), "heads"))
    for vi in model.graph.input:
        for d, v in zip(vi.type.tensor_type.shape.dim, (1, 16, 8)):
            d.Clear()
            d.dim_value = v
    fused, done = _rewritten(model, ["attention"])
    assert done == {"attention": 0} and _ops(fused)["Softmax"] == 1
