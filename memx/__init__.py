"""memx: memory-augmented Transformers from PyTorch to deployment.

    pkg = memx.export(model, "model.memx")            # or: memx export PRESET --out DIR
    report = memx.validate(pkg, segments=1024)
    rt = memx.runtimes.open(pkg, backend="onnxruntime")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"export": "memx.exporter.to_onnx", "validate": "memx.validation.parity", "runtimes": "memx.runtimes", "errors": "memx.errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"memx.{name}" else getattr(module, name)
    raise AttributeError(f"module 'memx' has no attribute {name!r}")
