"""A torch reference that breaks at a chosen step: the side-by-side checks (parity, precision)
must stop with its error, and the segments queued after it must never run."""

from __future__ import annotations

from typing import Any

from memx.models.rmt import RMT, RMTConfig


class FailingRMT(RMT):
    """rmt-tiny's reference that raises at its ``fail_at``-th step (``calls`` counts the steps)."""

    calls = 0
    fail_at = 4

    def forward(self, *args: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == type(self).fail_at:
            raise RuntimeError("reference broke")
        return super().forward(*args)


def failing_reference_options(fail_at: int) -> dict[str, Any]:
    """reference_options that build the failing reference (the step counter starts at 0)."""
    FailingRMT.calls, FailingRMT.fail_at = 0, fail_at
    return {"factory": lambda config: FailingRMT(RMTConfig(**config))}
