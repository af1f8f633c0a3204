"""memx.LocalGlobalAttention: torch op, ONNX node + reference body, C++ kernel — three ways, one answer."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from memx.ops import custom_ops, get_custom_op, local_global_attention
from memx.ops.lga_op import OP_NAME, reference_body, register_onnx_schema
from memx.ops.library import find_library


def test_registry_lists_the_op():
    assert [op.name for op in custom_ops()] == [OP_NAME]
    op = get_custom_op(OP_NAME)
    assert op.domain == "memx" and op.version == 1 and op.torch_op() is torch.ops.memx.local_global_attention.default


def _case(rng: np.random.Generator, *, memory: int, dim: int = 8):
    b, h, s = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 40))
    q, k, v = (rng.standard_normal((b, h, s, dim)).astype(np.float32) for _ in range(3))
    lengths = rng.integers(0, s + 1, size=b).astype(np.int64)
    lengths[0] = s  # at least one full row
    mem = [rng.standard_normal((b, h, memory, dim)).astype(np.float32) for _ in range(2)] if memory else []
    return q, k, v, lengths, mem


def test_torch_op_passes_opcheck_and_equals_the_reference():
    rng = np.random.default_rng(0)
    q, k, v, lengths, mem = _case(rng, memory=3)
    args = tuple(torch.from_numpy(a) for a in (q, k, v, lengths, *mem))
    torch.library.opcheck(torch.ops.memx.local_global_attention.default, (*args, "band", 3, False))
    out = torch.ops.memx.local_global_attention(*args, "band", 3, False)
    ref = local_global_attention(args[0], args[1], args[2], args[4], args[5], args[3], pattern="band", window=3, causal=False)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


@functools.lru_cache(maxsize=None)
def _single_op_model(pattern: str, window: int, causal: bool, memory: bool, dim: int) -> bytes:
    """An ONNX model with one memx node and its reference body (all shapes dynamic)."""
    register_onnx_schema()
    names = ["q", "k", "v", "lengths"] + (["mem_k", "mem_v"] if memory else [])
    node = helper.make_node(OP_NAME, names, ["out"], domain="memx", pattern=pattern, window=window, causal=int(causal),
                            plugin_namespace="memx", plugin_version="1")
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, ["B", "H", "S", dim]) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"]))
    inputs += [helper.make_tensor_value_info(n, f, ["B", "H", "M", dim]) for n in names[4:]]
    graph = helper.make_graph([node], "lga", inputs, [helper.make_tensor_value_info("out", f, ["B", "H", "S", dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("memx", 1)],
                              functions=[reference_body(node, head_dim=dim)])
    model.ir_version = 10
    return model.SerializeToString()


def _ort(model: bytes, feeds: dict, kernel: bool) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if kernel:
        so.register_custom_ops_library(str(find_library()))
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


CONFIGS = [(p, w, c, m) for p in ("band", "chunked") for w, c, m in ((1, False, 0), (3, True, 2), (4, False, 5), (7, True, 0), (5, False, 1))]


@pytest.mark.kernels
@pytest.mark.parametrize("pattern,window,causal,memory", CONFIGS)
def test_three_way_parity_on_random_shapes(pattern, window, causal, memory):
    model = _single_op_model(pattern, window, causal, memory > 0, 8)
    rng = np.random.default_rng([window, memory, int(causal), len(pattern)])
    for _ in range(6):  # S not a multiple of the window, ragged and empty rows, several batch/head sizes
        q, k, v, lengths, mem = _case(rng, memory=memory)
        t = [torch.from_numpy(a) for a in (q, k, v, lengths, *mem)]
        ref = torch.ops.memx.local_global_attention(t[0], t[1], t[2], t[3], t[4] if mem else None, t[5] if mem else None, pattern, window, causal).numpy()
        feeds = dict(zip(["q", "k", "v", "lengths", "mem_k", "mem_v"], (q, k, v, lengths, *mem)))
        body, kernel = _ort(model, feeds, kernel=False), _ort(model, feeds, kernel=True)
        np.testing.assert_allclose(body, ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(kernel, ref, atol=1e-5, rtol=0)
        padding = np.arange(q.shape[2])[None, :] >= lengths[:, None]  # (B, S)
        assert (kernel.transpose(0, 2, 1, 3)[padding] == 0).all()  # padding queries give zeros


@pytest.mark.kernels
def test_kernel_refuses_mismatched_shapes_with_the_shapes_in_the_message():
    model = _single_op_model("band", 3, False, True, 8)
    rng = np.random.default_rng(1)
    q, k, v, lengths, mem = _case(rng, memory=2)
    feeds = {"q": q, "k": k[:, :, :1], "v": v, "lengths": lengths, "mem_k": mem[0], "mem_v": mem[1]}
    with pytest.raises(Exception, match=r"q, k, v must share one \[B, H, S, D\] shape"):
        _ort(model, feeds, kernel=True)


def test_reference_body_is_a_model_local_function_of_the_op():
    model = onnx.load_from_string(_single_op_model("band", 4, False, True, 8))
    body = model.functions[0]
    assert (body.domain, body.name) == ("memx", OP_NAME) and list(body.input) == ["q", "k", "v", "lengths", "mem_k", "mem_v"]
    assert {"MatMul", "Softmax"} <= {n.op_type for n in body.node} and "blocked band window 4" in body.doc_string
    onnx.checker.check_model(model)  # the memx schema is registered: the node and its body check
