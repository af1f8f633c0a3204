"""int8-qdq gives each consumer of a quantized activation its own Q/DQ pair
(memx.calibration.qdq_fanout): ONNX Runtime then fuses every quantized MatMul on x86, the
graph computes the same values as without the pass (outputs and states over a stream, with
ORT_ENABLE_BASIC, which fuses no Q/DQ), no activation QuantizeLinear has two consumer paths,
the memory path and the states stay float, and TensorRT still parses and builds the graph."""

from __future__ import annotations

import contextlib
import shutil
from typing import Iterator

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import memx
from memx import runtimes
from memx.calibration import quantize_package
from memx.calibration.inspect import precision_facts
from memx.calibration.methods.int8_qdq import Int8QDQ
from memx.calibration.qdq_fanout import fused_matmul_groups, private_activation_qdq, shared_activation_qdq
from memx.exporter import Package, export

VOCAB, SEG, D, SLOTS = 64, 16, 32, 4
SEGMENTS = 36


class MemoryAttentionLM(nn.Module):
    """A pre-norm block as most Transformer code writes it (q, k and v: three Linear layers on one
    LayerNorm output), whose tokens attend to [memory; tokens]; the memory slots then attend to
    the new token states and move toward what they read."""

    def __init__(self, vocab: int = VOCAB, d: int = D):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.norm, self.mem_norm, self.ff_norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mem_k, self.mem_v = nn.Linear(d, d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.write_q = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens, memory, mask):
        x = self.embed(tokens)  # (B, S, d)
        h, m = self.norm(x), self.mem_norm(memory)  # (B, S, d), (B, M, d)
        keys = torch.cat([self.mem_k(m), self.k(h)], 1)  # (B, M + S, d)
        values = torch.cat([self.mem_v(m), self.v(h)], 1)
        real = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, memory.shape[1]), mask], 1)  # (B, M + S): padding is no key
        scores = (self.q(h) @ keys.transpose(1, 2) / x.shape[-1] ** 0.5).masked_fill(real[:, None, :] == 0, -1e4)  # (B, S, M + S)
        x = x + self.o(torch.softmax(scores, -1) @ values)
        x = x + self.down(torch.relu(self.up(self.ff_norm(x))))
        written = torch.softmax((self.write_q(memory) @ x.transpose(1, 2)).masked_fill(mask[:, None, :] == 0, -1e4), -1) @ x  # (B, M, d)
        return {"logits": self.head(x), "memory": memory + 0.1 * torch.tanh(written)}


@contextlib.contextmanager
def _writer(private: bool) -> Iterator[None]:
    """int8-qdq with the pass on (as shipped) or off (the writer before it)."""
    saved = Int8QDQ._private_activation_qdq
    Int8QDQ._private_activation_qdq = private
    try:
        yield
    finally:
        Int8QDQ._private_activation_qdq = saved


def _graph_files(pkg: Package) -> dict[str, object]:
    m = pkg.manifest
    return {g.name: pkg.file(g.file) for g in m.graphs + (m.decode.graphs if m.decode else [])}


@pytest.fixture(scope="module")
def prenorm(tmp_path_factory) -> Package:
    torch.manual_seed(0)
    wrapped = memx.wrap(MemoryAttentionLM(), state={"memory": memx.State((SLOTS, D), init=torch.randn(SLOTS, D) * 0.5)}, vocab_size=VOCAB, max_segment_len=SEG, mask="mask", name="prenorm-memory")
    return export(wrapped, tmp_path_factory.mktemp("prenorm") / "fp32.memx", verify_segments=0)


@pytest.fixture(scope="module", params=["prenorm", "gmat-tiny", "rmt-tiny"])
def quantized_pair(request, prenorm, package_of, tmp_path_factory) -> tuple[Package, Package]:
    """(int8-qdq as written now, int8-qdq without the pass) of the same fp32 package and feeds."""
    fp32 = prenorm if request.param == "prenorm" else package_of(request.param)
    out = tmp_path_factory.mktemp(request.param)
    pkgs = []
    for private in (True, False):
        with _writer(private):
            pkgs.append(quantize_package(fp32, out / f"private-{private}.memx", method="int8-qdq", calib_segments=16, calib_streams=2, progress=False).package)
    return pkgs[0], pkgs[1]


def test_every_quantized_matmul_is_fused_by_onnxruntime(quantized_pair):
    new, old = quantized_pair
    records = new.manifest.quantization["graphs"]
    assert sum(r["private_activation_qdq"] for r in records.values()) > 0
    for name, path in _graph_files(new).items():
        count = fused_matmul_groups(path)
        assert count.groups > 0 and count.unfused == () and count.fused == count.groups, f"{name}: {count} {count.unfused}"
    before = {name: fused_matmul_groups(path) for name, path in _graph_files(old).items()}
    assert any(c.unfused for c in before.values()), before  # the models show the problem the pass removes


def test_no_activation_quantize_has_two_consumer_paths(quantized_pair):
    new, old = quantized_pair
    for name, path in _graph_files(new).items():
        assert shared_activation_qdq(onnx.load(str(path))) == [], name
    assert any(shared_activation_qdq(onnx.load(str(path))) for path in _graph_files(old).values())


def test_outputs_and_states_equal_the_graph_without_the_pass(quantized_pair):
    """ORT_ENABLE_BASIC runs Q/DQ as written (no integer fusion), so the two graphs must agree
    exactly, outputs and carried states, segment after segment (ragged lengths, a reset)."""
    new, old = quantized_pair
    a, b = (runtimes.open(p, graph_optimization="basic", intra_op_threads=1).stream(2) for p in (new, old))
    m = new.manifest
    seg = m.segment["max"]
    rng = np.random.default_rng(0)
    for s in range(SEGMENTS):
        tokens = rng.integers(0, m.vocab_size, (2, seg))
        lengths = np.array([seg, rng.integers(1, seg + 1)])
        reset = np.array([s == 20, False])
        extras = m.sample_inputs(rng, 2, seg)
        out_a, out_b = a.step(tokens, lengths, reset, **extras), b.step(tokens, lengths, reset, **extras)
        assert out_a.keys() == out_b.keys()
        for k in out_a:
            np.testing.assert_array_equal(out_a[k], out_b[k], err_msg=f"segment {s}, output {k}")
        for k in a.state:
            np.testing.assert_array_equal(a.state[k], b.state[k], err_msg=f"segment {s}, state {k}")


def test_the_memory_path_and_the_states_stay_float(quantized_pair):
    new, _ = quantized_pair
    facts = precision_facts(new)
    assert facts["memory_path_intact"], facts["graphs"]
    assert all(s.precision == "fp32" and s.dtype == "float32" for s in new.manifest.state if s.dtype.startswith("float"))
    stream = runtimes.open(new).stream(2)
    stream.step(np.random.default_rng(1).integers(0, new.manifest.vocab_size, (2, new.manifest.segment["max"])), **new.manifest.sample_inputs(np.random.default_rng(1), 2, new.manifest.segment["max"]))
    floats = {s.name for s in new.manifest.state if s.dtype.startswith("float")}
    assert floats and all(stream.state[k].dtype == np.float32 for k in floats)


def _shared_qdq_graph(uses: int, rank: int = 3, per_axis: bool = False) -> onnx.ModelProto:
    """x -> Q -> DQ read by ``uses`` MatMuls (weights through their own DQ), plus a second DQ of
    the same Q; ``per_axis``: the activation has one scale per channel (axis -1)."""
    shape = ["b", "s", 8][-rank:]
    dims = (8,) if per_axis else ()
    inits = [numpy_helper.from_array(np.full(dims, 0.05, np.float32), "s_x"), numpy_helper.from_array(np.zeros(dims, np.int8), "z_x"),
             numpy_helper.from_array(np.array(0.01, np.float32), "s_w"), numpy_helper.from_array(np.array(0, np.int8), "z_w")]
    axis = {"axis": -1} if per_axis else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["xq"], name="q", **axis),
             helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xd"], name="dq", **axis),
             helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xd2"], name="dq2", **axis)]
    outputs = []
    for i in range(uses):
        w = np.random.default_rng(i).integers(-127, 128, (8, 8)).astype(np.int8)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", "s_w", "z_w"], [f"wd{i}"], name=f"wdq{i}"),
                  helper.make_node("MatMul", ["xd2" if i == uses - 1 else "xd", f"wd{i}"], [f"y{i}"], name=f"mm{i}")]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [*shape[:-1], 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_pass_on_a_small_graph(tmp_path):
    model = _shared_qdq_graph(uses=4)
    assert shared_activation_qdq(model) == ["q"]
    assert private_activation_qdq(model) == 3 and private_activation_qdq(model) == 0  # a second run finds nothing
    onnx.checker.check_model(model, full_check=True)
    assert shared_activation_qdq(model) == []
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    axes = [next((a.i for a in n.attribute if a.name == "axis"), None) for n in quantizers]
    assert axes[0] is None and len(set(axes)) == 4 and all(-3 <= a <= 2 for a in axes[1:])  # distinct, in range (TensorRT checks)
    assert sum(n.op_type == "DequantizeLinear" and n.input[0].startswith("xq") for n in model.graph.node) == 4  # the idle second DQ is gone
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    onnx.save(_shared_qdq_graph(uses=4), str(before))
    onnx.save(model, str(after))
    assert fused_matmul_groups(before).unfused and not fused_matmul_groups(after).unfused
    import onnxruntime as ort

    x = {"x": np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ref, got = (ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]).run(None, x) for p in (before, after))
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


def test_more_uses_than_in_range_axes_share_the_last_copy():
    """A rank-1 activation has two in-range axes (-1, 0): the fourth use shares the third's pair."""
    model = _shared_qdq_graph(uses=4, rank=1)
    assert private_activation_qdq(model) == 2
    onnx.checker.check_model(model, full_check=True)
    assert len(shared_activation_qdq(model)) == 1


def test_a_per_axis_activation_quantizer_is_left_alone():
    """Its axis is meaningful: no copy could carry another one."""
    model = _shared_qdq_graph(uses=3, per_axis=True)
    assert private_activation_qdq(model) == 0 and shared_activation_qdq(model) == ["q"]


@pytest.mark.trt_parser
def test_tensorrt_builds_the_graph_with_private_pairs(prenorm, tmp_path):
    from memx.tensorrt import build_engines, diagnose
    from memx.tensorrt.versions import installed_flavour

    flavour = installed_flavour()
    if flavour is None or not flavour.rtx:
        pytest.skip("ahead-of-time builds for a named compute capability need TensorRT-RTX (tensorrt builds for its own GPU)")
    q = quantize_package(prenorm, tmp_path / "q.memx", method="int8-qdq", calib_segments=8, calib_streams=2, progress=False).package
    assert q.manifest.quantization["graphs"]["step"]["private_activation_qdq"] > 0
    assert not [f for f in diagnose(q.path).findings if f.severity == "error"]
    path = tmp_path / "built.memx"
    shutil.copytree(q.path, path)
    tags = build_engines(path, target_cc="sm89", batch="1,2,2")
    assert [t.graph for t in tags] == ["step"] and (path / tags[0].file).stat().st_size > 1000


def test_matmul_outputs_stay_float_and_the_int8_matmul_pass_takes_every_group(quantized_pair):
    """Q/DQ only on MatMul inputs (NVIDIA's placement); memx's int8-matmul pass then turns every
    quantized MatMul into MatMulIntegerToFloat, with the same outputs over a stream."""
    from memx.runtimes.onnxruntime_passes import run_passes

    new, _ = quantized_pair
    for name, path in _graph_files(new).items():
        model = onnx.load(str(path))
        readers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)

        def feeds_only_matmuls(q: onnx.NodeProto) -> bool:  # a Q/DQ that is the next MatMul's input quantization
            return all(r.op_type in ("MatMul", "Gemm") for dq in readers.get(q.output[0], []) for r in readers.get(dq.output[0], []))

        output_qdq = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                      for q in readers.get(n.output[0], []) if q.op_type == "QuantizeLinear" and not feeds_only_matmuls(q)]
        assert output_qdq == [], name
        groups = fused_matmul_groups(path).groups
        assert run_passes(model, ["int8-matmul"]) == {"int8-matmul": groups}, name
    plain, fused = (runtimes.open(new, graph_passes=p, intra_op_threads=1).stream(2) for p in ("none", "int8-matmul"))
    rng = np.random.default_rng(0)
    seg = new.manifest.segment["max"]
    for _ in range(40):
        tokens = rng.integers(0, new.manifest.vocab_size, (2, seg))
        a, b = plain.step(tokens), fused.step(tokens)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)
    for k in plain.state:
        np.testing.assert_allclose(fused.state[k], plain.state[k], rtol=1e-5, atol=1e-5, err_msg=k)
