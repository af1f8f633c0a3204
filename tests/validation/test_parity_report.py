"""What a parity report says about a failure: amplified rounding (a memory recurrence that
magnifies float differences, which --teacher-forced measures step by step) or a wrong graph."""

from __future__ import annotations

from memx.validation.parity import ParityReport, Worst


def _report(errors: list[float], *, atol: float = 1e-4, teacher_forced: bool = False) -> ParityReport:
    first = next(({"segment": i, "tensor": "state.memory", "error": e, "index": [0]} for i, e in enumerate(errors) if not e <= atol), None)
    worst = max(range(len(errors)), key=lambda i: errors[i])
    return ParityReport(backend="onnxruntime", reference="torch", segments=len(errors), batch=2, atol=atol, seed=0, passed=first is None,
                        max_error=errors[worst], worst=Worst(errors[worst], worst, "state.memory", [0]), first_failure=first,
                        per_tensor_max={"state.memory": errors[worst]}, per_segment_max=errors, resets=0, padded_rows=0, teacher_forced=teacher_forced)


def test_an_error_that_grows_from_rounding_level_is_named_amplified_rounding():
    errors = [3e-7 * 1.2**i for i in range(64)]  # 3e-7, growing x1.2 per segment: over 1e-4 from segment 32
    report = _report(errors)
    assert not report.passed and report.first_failure["segment"] == 32
    assert abs(report.amplification() - 1.2) < 0.01
    assert "grows about x1.20 per segment" in report.summary() and "--teacher-forced" in report.summary()


def test_a_wrong_graph_or_a_pass_is_not_called_amplified_rounding():
    assert _report([0.5] * 64).amplification() is None  # wrong from the first segment
    assert _report([1e-6] * 40 + [0.3] * 24).amplification() is None  # right, then wrong from segment 40 on: a jump, not a growth
    assert _report([1e-6] * 64).amplification() is None  # passed
    assert _report([3e-7 * 1.2**i for i in range(64)], teacher_forced=True).amplification() is None  # teacher forcing measures each step
    assert "--teacher-forced" not in _report([0.5] * 64).summary()
