"""Lazy re-exports for package facades: a name is imported from its module on first use, so
reading packages (manifest, snapshots, ONNX Runtime) never imports torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving ``names`` (attribute -> module that
    defines it; a name that is the module itself, like ``memx.runtimes``, gives the module)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        return module if module.__name__ == f"{package}.{name}" else getattr(module, name)

    return __getattr__
