"""Runtimes: open a package with a backend, then step streams or pools of streams.

    rt = memx.runtimes.open("pkg.memx", backend="onnxruntime", device="cpu")
    s = rt.stream(); out = s.step(tokens)
"""

from __future__ import annotations

import os
from typing import Any

from memx.package.files import Package
from memx.runtimes.base import Backend, Runtime, Stream, StreamPool, StreamState, backends, get_backend, register_backend  # noqa: F401
from memx.runtimes.resident import ResidentStream

# Backends register on import. The torch backend is registered lazily so that
# ONNX Runtime deployments need no PyTorch.
from memx.runtimes import onnxruntime_backend as _ort  # noqa: F401,E402
from memx.runtimes.base import register_lazy_backend  # noqa: E402

register_lazy_backend("torch", "memx.runtimes.torch_backend")
register_lazy_backend("tensorrt", "memx.runtimes.tensorrt_backend")  # engines from `memx build`; needs tensorrt + a GPU


def open(path: str | os.PathLike | Package, backend: str = "onnxruntime", device: str = "cpu", *, verify: bool = True,  # noqa: A001
         resident: bool | None = None, cuda_graphs: bool = False, **options: Any) -> Runtime:
    """Open a package. ``options`` go to the backend (e.g. ``providers=[...]`` for onnxruntime).

    ``resident`` (default: on every device but the CPU) makes ``stream()`` keep the memory in
    device buffers between steps; ``cuda_graphs`` (torch and tensorrt on CUDA) replays each step
    as a captured CUDA graph. ``pool()`` follows ``resident`` too (rows of device buffers).
    ``verify`` (default) checks every package file's sha256 at open (cached per unchanged file);
    ``verify=False`` checks sizes only, and ``describe()`` says so."""
    factory = get_backend(backend)
    package = path if isinstance(path, Package) else Package.open(path, verify=verify)
    return Runtime(package, factory(package, device=device, **options), resident=resident, cuda_graphs=cuda_graphs)


__all__ = ["Backend", "ResidentStream", "Runtime", "Stream", "StreamPool", "StreamState", "backends", "get_backend", "open", "register_backend"]
