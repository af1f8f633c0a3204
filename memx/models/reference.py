"""The PyTorch reference of a package, in any process: the model the weights in
``reference/weights.safetensors`` belong to.

Where it comes from, in this order:

1. ``model=``: an instance the caller holds (the exporter checks its own export this way);
2. ``factory=``: an import path ``"package.module:function"`` (or a callable) the user names,
   called with the manifest's config dict and returning a :class:`SegmentModel`;
3. the family registry, for memx's families (and any the process has registered);
4. the factory the package itself records (``reference.factory``), but only with
   ``trust_package_factory=True``: importing code a package names is running it, so memx
   never does it for a package unless the user says so.

Anything else is a :class:`~memx.errors.ReferenceModelError` that says which of these to use.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from memx.errors import ReferenceModelError
from memx.models.base import SegmentModel
from memx.models.registry import build_model, families

Factory = Callable[[dict[str, Any]], SegmentModel]


def import_factory(path: str) -> Factory:
    """``"package.module:function"`` -> the function (importing the module runs its code)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ReferenceModelError("a reference factory is named as 'package.module:function'", expected="module:function", actual=path)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises while importing
        raise ReferenceModelError(f"cannot import the reference factory's module {module_name!r}: {type(e).__name__}: {e}", expected="an importable module (on sys.path)",
                                  actual=module_name, hint="run from the directory that holds it, or add it to PYTHONPATH") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ReferenceModelError(f"module {module_name!r} has no {attr!r}", expected=f"a function {attr}(config) -> SegmentModel", actual=sorted(n for n in dir(module) if not n.startswith("_"))[:20])
        target = getattr(target, part)
    if not callable(target):
        raise ReferenceModelError(f"{path} is not callable", expected="a function (config dict) -> SegmentModel", actual=type(target).__name__)
    return target


def build_reference(manifest: Any, *, model: SegmentModel | None = None, factory: str | Factory | None = None,
                    trust_package_factory: bool = False) -> SegmentModel:
    """The reference model of ``manifest`` (module docstring); weights are the caller's to load."""
    if model is not None:
        return _checked(model, manifest, "the model given")
    if factory is not None:
        make = import_factory(factory) if isinstance(factory, str) else factory
        return _checked(make(dict(manifest.config)), manifest, f"factory {factory}")
    if manifest.family in families():
        return build_model(manifest.family, manifest.config)
    recorded = (manifest.reference or {}).get("factory")
    if recorded and trust_package_factory:
        return _checked(import_factory(recorded)(dict(manifest.config)), manifest, f"the package's factory {recorded}")
    how = (f"this package records its factory {recorded!r}: pass --trust-reference (memx validate) or trust_package_factory=True to import it, "
           f"or name it yourself with --reference {recorded} / factory={recorded!r}") if recorded else \
          "name the code that builds it: --reference package.module:function (memx validate) or factory='package.module:function'"
    raise ReferenceModelError(f"the PyTorch reference of this package (family {manifest.family!r}) is not a memx family and memx imports no code unasked",
                              expected=f"a registered family {sorted(families())} or a factory you name", actual=manifest.family, hint=how)


def _checked(model: Any, manifest: Any, source: str) -> SegmentModel:
    if not isinstance(model, SegmentModel):
        raise ReferenceModelError(f"{source} did not give a memx SegmentModel", expected="a SegmentModel (memx.wrap(...) makes one)", actual=type(model).__name__)
    if model.family != manifest.family:
        raise ReferenceModelError(f"{source} builds another model family", expected=manifest.family, actual=model.family)
    return model.eval()
