"""The model zoo: small models trained here on the seed papers' synthetic tasks.

The catalogue (entries, checkpoints' paths, ``build_zoo_model``) lives in
``memx.models.zoo``, below the exporter, so that ``memx.models.create`` and ``memx export``
resolve zoo names without importing the zoo's tools; this package is its public face, the
shipped checkpoints (``checkpoints/``) and the tools that make them (``make.py``) and
report them (``report.py``, docs/zoo.md). ``memx export NAME`` accepts zoo names.
"""

from __future__ import annotations

from memx.lazy import lazy_exports

DEFAULT_MODEL = "gmat-majority"  # what `memx quickstart` and `make quickstart` run (here, not in memx.models: reading it imports no torch)

_NAMES = {name: "memx.models.zoo" for name in ("CHECKPOINTS", "ZooEntry", "build_zoo_model", "get_zoo", "is_zoo", "register_zoo", "zoo_entries")}
__getattr__ = lazy_exports(__name__, _NAMES)
__all__ = sorted([*_NAMES, "DEFAULT_MODEL"])
