"""Exporter: step wrapper, torch.onnx export, the package manifest, parity validation.

Names are imported lazily: the manifest and package modules need no torch, so a
deployment with only ONNX Runtime can read packages without PyTorch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": "memx.exporter.to_onnx",
    "export_preset": "memx.exporter.to_onnx",
    "load_checkpoint": "memx.exporter.to_onnx",
    "FORMAT_VERSION": "memx.exporter.manifest",
    "Manifest": "memx.exporter.manifest",
    "Package": "memx.exporter.package",
    "ParityReport": "memx.exporter.parity",
    "ReferenceRollouts": "memx.exporter.parity",
    "validate": "memx.exporter.parity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memx.exporter' has no attribute {name!r}")


__all__ = sorted(_LAZY)
