"""memx: memory-augmented Transformers from PyTorch to deployment.

    pkg = memx.export(model, "model.memx")            # or: memx export PRESET --out DIR
    report = memx.validate(pkg, segments=1024)
    rt = memx.runtimes.open(pkg, backend="onnxruntime")
    step = memx.wrap(my_module, state={"memory": memx.State((8, 64))}, vocab_size=V, max_segment_len=S)  # your own model
"""

from __future__ import annotations

from memx.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {"export": "memx.exporter.to_onnx", "validate": "memx.validation.parity", "runtimes": "memx.runtimes", "errors": "memx.errors",
         "wrap": "memx.models.wrap", "State": "memx.models.wrap", "Input": "memx.models.wrap"}


__getattr__ = lazy_exports("memx", _LAZY)
