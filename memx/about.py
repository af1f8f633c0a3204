"""What is installed: memx's distribution name and version, the versions of the libraries it runs
on (read from their metadata, without importing them: `memx --version` stays fast and never
imports PyTorch), the kernel library, and how to install what is missing."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import memx

# "memx" on PyPI is an unrelated project: memx's distribution is memx-toolkit (import name memx)
DISTRIBUTION = "memx-toolkit"
COMPONENTS = ("onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "torch", "tensorrt", "tensorrt-rtx-cu13-bindings", "tritonclient", "transformers")


def install_hint(extra: str) -> str:
    """The pip command that brings an extra, e.g. pip install 'memx-toolkit[export]'."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_facts() -> dict[str, Any]:
    """memx's version and the installed components (None: not installed)."""
    from memx.ops.library import describe_library, find_library

    components: dict[str, Any] = {c: v for c in COMPONENTS if (v := distribution_version(c)) is not None}
    if "torch" not in components:
        components["torch"] = "not installed"
    lib = find_library()
    try:
        components["libmemx_ops"] = describe_library(lib).split("kernel ")[-1].rstrip(")") if lib else "not found"
    except OSError as e:  # a library of another platform or a broken file
        components["libmemx_ops"] = f"unloadable ({e})"
    return {"memx": memx.__version__, "distribution": DISTRIBUTION, "installed_as": distribution_version(DISTRIBUTION), "components": components}
