"""Validation of a package over long streams, against its reference:

- ``parity``: outputs and states of a backend against PyTorch within ``atol`` (``validate``,
  ``ReferenceRollouts``);
- ``drift``: precision drift of a quantized package and its task accuracy (``compare_precision``);
- ``accuracy``: a task's held-out accuracy through any runtime (``runtime_task_accuracy``);
- ``sources``: the token streams they run on (task episodes, token files, random tokens);
- ``recording``: ``record(pkg, report)`` keeps any of these reports in the package's manifest.

Names are imported lazily (parity needs no torch until a torch reference runs).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ParityReport": "memx.validation.parity",
    "ReferenceRollouts": "memx.validation.parity",
    "validate": "memx.validation.parity",
    "DriftReport": "memx.validation.drift",
    "TaskAccuracy": "memx.validation.drift",
    "compare_precision": "memx.validation.drift",
    "save_report": "memx.validation.drift",
    "TaskScore": "memx.validation.accuracy",
    "runtime_task_accuracy": "memx.validation.accuracy",
    "record": "memx.validation.recording",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memx.validation' has no attribute {name!r}")


__all__ = sorted(_LAZY)
