"""memx: memory-augmented Transformers from PyTorch to deployment.

    pkg = memx.export(model, "model.memx")            # or: memx export PRESET --out DIR
    report = memx.validate(pkg, segments=1024)
    rt = memx.runtimes.open(pkg, backend="onnxruntime")
"""

from __future__ import annotations

from memx.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {"export": "memx.exporter.to_onnx", "validate": "memx.validation.parity", "runtimes": "memx.runtimes", "errors": "memx.errors"}


__getattr__ = lazy_exports("memx", _LAZY)
