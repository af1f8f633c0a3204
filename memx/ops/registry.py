"""Registry of memx custom ONNX ops (domain ``memx``): one entry per op, so the exporter,
the runtimes, `memx inspect` and the tests enumerate them.

An op is a ``torch.library`` custom op that models call while exporting; its ONNX
translation emits one node in domain ``memx``; a model-local FunctionProto attached to the
model gives the node its portable reference body (what ONNX Runtime and TensorRT run when no
kernel or plugin claims the node); the C++ library ``libmemx_ops`` has a fast kernel.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from memx.registry import Registry

DOMAIN = "memx"
DOMAIN_VERSION = 1

_EXPORTING = contextvars.ContextVar("memx_custom_ops", default=False)


@dataclass(frozen=True)
class CustomOp:
    name: str  # ONNX op type in domain memx
    torch_op: Callable[[], Any]  # returns the torch OpOverload (resolved lazily)
    translate: Callable[..., Any]  # onnxscript translation for torch.onnx's custom_translation_table
    reference_body: Callable[..., Any]  # (node, head_dim=, opset=) -> onnx.FunctionProto
    description: str
    domain: str = DOMAIN
    version: int = DOMAIN_VERSION


_OPS: Registry[CustomOp] = Registry("custom op")


def register_custom_op(op: CustomOp) -> CustomOp:
    _OPS.add(op.name, op)
    return op


BUILTIN_MODULES = ("memx.ops.lga_op",)  # memx's own ops (they import torch): registered on first lookup


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def custom_ops() -> list[CustomOp]:
    _load_builtin()
    return list(_OPS.values())


def get_custom_op(name: str) -> CustomOp:
    _load_builtin()
    return _OPS.get(name)


@contextlib.contextmanager
def exporting_custom_ops(enabled: bool = True) -> Iterator[None]:
    """While active, models route their sparse attention through the custom ops."""
    token = _EXPORTING.set(enabled)
    try:
        yield
    finally:
        _EXPORTING.reset(token)


def use_custom_ops() -> bool:
    return _EXPORTING.get()
