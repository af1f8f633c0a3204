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

from memx.lazy import lazy_exports

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


__getattr__ = lazy_exports("memx.validation", _LAZY)
__all__ = sorted(_LAZY)
