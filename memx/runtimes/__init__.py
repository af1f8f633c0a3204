"""Runtimes: open a package with a backend, then step streams or pools of streams.

    rt = memx.runtimes.open("pkg.memx", backend="onnxruntime", device="cpu")
    s = rt.stream(); out = s.step(tokens)
"""

from __future__ import annotations

import os
from typing import Any

from memx.exporter.package import Package
from memx.runtimes.base import Backend, Runtime, Stream, StreamPool, StreamState, backends, get_backend, register_backend

# Backends register on import. The torch backend is registered lazily so that
# ONNX Runtime deployments need no PyTorch.
from memx.runtimes import onnxruntime_backend as _ort  # noqa: F401,E402
from memx.runtimes.base import register_lazy_backend  # noqa: E402

register_lazy_backend("torch", "memx.runtimes.torch_backend")
register_lazy_backend("tensorrt", "memx.runtimes.tensorrt_backend")  # engines from `memx build`; needs tensorrt + a GPU


def open(path: str | os.PathLike | Package, backend: str = "onnxruntime", device: str = "cpu", *, verify: bool = False, **options: Any) -> Runtime:  # noqa: A001
    """Open a package. ``options`` go to the backend (e.g. ``providers=[...]`` for onnxruntime)."""
    factory = get_backend(backend)
    package = path if isinstance(path, Package) else Package.open(path, verify=verify)
    return Runtime(package, factory(package, device=device, **options))


__all__ = ["Backend", "Runtime", "Stream", "StreamPool", "StreamState", "backends", "get_backend", "open", "register_backend"]
