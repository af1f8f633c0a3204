"""Exporter: step wrapper, torch.onnx export, parity validation (the package contract itself
is memx.package).

Names are imported lazily: the manifest and package modules need no torch, so a
deployment with only ONNX Runtime can read packages without PyTorch installed.
"""

from __future__ import annotations

from memx.lazy import lazy_exports

_LAZY = {
    "export": "memx.exporter.to_onnx",
    "export_preset": "memx.exporter.to_onnx",
    "export_factory": "memx.exporter.to_onnx",
    "load_checkpoint": "memx.exporter.to_onnx",
    "FORMAT_VERSION": "memx.package.manifest",  # the package contract lives in memx.package;
    "Manifest": "memx.package.manifest",  # these names stay here for existing callers
    "Package": "memx.package.files",
}


__getattr__ = lazy_exports("memx.exporter", _LAZY)
__all__ = sorted(_LAZY)
