"""``memx::LocalGlobalAttention``: GMAT's local + global attention as one custom ONNX op.

torch side: ``torch.ops.memx.local_global_attention`` (eager = the blocked reference,
fake = shape only). ONNX side: one node

    memx.LocalGlobalAttention(q, k, v, lengths[, mem_k, mem_v]) -> out
        q, k, v (B, h, S, dh) float; lengths (B,) int64; mem_k, mem_v (B, h, M, dh), omitted for M = 0
        attributes: pattern ("band" | "chunked"), window (int), causal (0 | 1),
                    plugin_namespace = "memx", plugin_version = "1" (TensorRT's plugin lookup keys)

with a model-local FunctionProto of the same (domain, name) as its reference body: the
blocked formulation exported from :func:`local_global_attention` (no S×S buffer), with every
dimension dynamic. ONNX Runtime runs the body unless a kernel (libmemx_ops) is registered.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any, Optional

import torch

from memx.ops.local_global import PATTERNS, local_global_attention
from memx.ops.registry import DOMAIN, DOMAIN_VERSION, CustomOp, register_custom_op, use_custom_ops

OP_NAME = "LocalGlobalAttention"


@torch.library.custom_op("memx::local_global_attention", mutates_args=())
def _local_global_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
    mem_k: Optional[torch.Tensor], mem_v: Optional[torch.Tensor], pattern: str, window: int, causal: bool,
) -> torch.Tensor:
    return local_global_attention(q, k, v, mem_k, mem_v, lengths, pattern=pattern, window=window, causal=causal)


@_local_global_op.register_fake
def _(q, k, v, lengths, mem_k, mem_v, pattern, window, causal):  # noqa: ANN001
    return torch.empty_like(q)


def sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mem_k: torch.Tensor | None, mem_v: torch.Tensor | None,
    lengths: torch.Tensor, *, pattern: str, window: int, causal: bool,
) -> torch.Tensor:
    """What models call: the custom op while exporting with custom ops, else the blocked
    reference (same math; differentiable for training)."""
    if use_custom_ops():
        return torch.ops.memx.local_global_attention(q, k, v, lengths, mem_k, mem_v, pattern, window, causal)
    return local_global_attention(q, k, v, mem_k, mem_v, lengths, pattern=pattern, window=window, causal=causal)


_SCHEMA_REGISTERED = False


def register_onnx_schema() -> None:
    """Declare memx.LocalGlobalAttention to onnx (inputs, attributes) once per process, so
    onnxscript can build the node and onnx.checker knows it."""
    global _SCHEMA_REGISTERED
    if _SCHEMA_REGISTERED:
        return
    from onnx import defs

    param = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    attr = defs.OpSchema.Attribute
    kind = defs.OpSchema.AttrType
    schema = defs.OpSchema(
        OP_NAME, DOMAIN, DOMAIN_VERSION,
        doc="GMAT local (band/chunked window) + global memory attention; padding queries give zeros.",
        inputs=[param("q", "T"), param("k", "T"), param("v", "T"), param("lengths", "tensor(int64)"),
                param("mem_k", "T", param_option=optional), param("mem_v", "T", param_option=optional)],
        outputs=[param("out", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "attention inputs and output")],
        attributes=[attr("pattern", kind.STRING, "band or chunked"), attr("window", kind.INT, "window (band) or chunk size"),
                    attr("causal", kind.INT, "1: keys j <= i only"), attr("plugin_namespace", kind.STRING, "TensorRT plugin namespace"),
                    attr("plugin_version", kind.STRING, "TensorRT plugin version")],
    )
    try:
        defs.register_schema(schema)
    except Exception:  # registered by an earlier import of this module in the same process
        pass
    _SCHEMA_REGISTERED = True


def _translate(q: Any, k: Any, v: Any, lengths: Any, mem_k: Any = None, mem_v: Any = None, pattern: str = "band", window: int = 1, causal: bool = False) -> Any:
    """onnxscript translation: a bare memx node (the body is attached after export, so the
    exporter's optimizer cannot inline it)."""
    import onnxscript

    register_onnx_schema()
    memx_opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    attrs = dict(pattern=pattern, window=int(window), causal=int(bool(causal)), plugin_namespace=DOMAIN, plugin_version=str(DOMAIN_VERSION))
    if mem_k is None:
        return memx_opset.LocalGlobalAttention(q, k, v, lengths, **attrs)
    return memx_opset.LocalGlobalAttention(q, k, v, lengths, mem_k, mem_v, **attrs)


class _Reference(torch.nn.Module):
    """The body without memory inputs (M = 0)."""

    def __init__(self, pattern: str, window: int, causal: bool):
        super().__init__()
        self.pattern, self.window, self.causal = pattern, window, causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return local_global_attention(q, k, v, None, None, lengths, pattern=self.pattern, window=self.window, causal=self.causal)


class _ReferenceWithMemory(_Reference):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return local_global_attention(q, k, v, mem_k, mem_v, lengths, pattern=self.pattern, window=self.window, causal=self.causal)


def _attributes(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def reference_body(node: Any, *, head_dim: int, opset: int = 18) -> Any:
    """The FunctionProto for ``node``'s attributes: the blocked form exported with dynamic
    batch, heads, segment and memory size (the head size is fixed: it sets the scale)."""
    import onnx
    from torch.export import Dim

    attrs = _attributes(node)
    pattern = attrs["pattern"].decode() if isinstance(attrs["pattern"], bytes) else attrs["pattern"]
    window, causal = int(attrs["window"]), bool(attrs["causal"])
    with_memory = len([i for i in node.input if i]) == 6
    b, h, s, dh, m = 2, 3, 2 * window + 3, head_dim, 5  # example sizes; all but dh become dynamic
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, s, dh, generator=g) for _ in range(3))
    args: tuple = (q, k, v, torch.tensor([s, s - 1]))
    B, H, S = Dim("B", min=1), Dim("H", min=1), Dim("S", min=1)
    qkv = {0: B, 1: H, 2: S}
    shapes: tuple = (qkv, qkv, qkv, {0: B})
    names = ["q", "k", "v", "lengths"]
    if with_memory:
        M = Dim("M", min=1)
        args += (torch.randn(b, h, m, dh, generator=g), torch.randn(b, h, m, dh, generator=g))
        shapes += ({0: B, 1: H, 2: M}, {0: B, 1: H, 2: M})
        names += ["mem_k", "mem_v"]
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), io.StringIO() as sink:
            warnings.simplefilter("ignore")
            import contextlib

            with contextlib.redirect_stdout(sink):
                module = (_ReferenceWithMemory if with_memory else _Reference)(pattern, window, causal)
                program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=shapes,
                                            opset_version=opset, input_names=names, output_names=["out"])
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)
    model = program.model_proto
    graph = model.graph
    constants = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in graph.initializer]
    nodes = constants + list(graph.node)
    for n in nodes:  # one body serves every call: node names would repeat once inlined
        n.name = ""
    return onnx.helper.make_function(
        DOMAIN, OP_NAME, inputs=[i.name for i in graph.input], outputs=[o.name for o in graph.output],
        nodes=nodes, opset_imports=list(model.opset_import),
        attributes=[], doc_string=f"memx.{OP_NAME} reference body: blocked {pattern} window {window}{' causal' if causal else ''}"
        f"{', with memory' if with_memory else ', no memory'}; O(S*(w+M)) memory",
    )


register_custom_op(CustomOp(
    name=OP_NAME,
    torch_op=lambda: torch.ops.memx.local_global_attention.default,
    translate=_translate,
    reference_body=reference_body,
    description="GMAT local (band/chunked window, optional causal) + global memory attention, ragged lengths",
))

__all__ = ["OP_NAME", "PATTERNS", "reference_body", "sparse_attention"]
