"""The precision gate of quantized packages without a task: mean top-1 agreement and KL of
the logits decide, with defaults that fail a package agreeing 75% of the time; `memx
validate` exits 1 on a failed gate and says which number failed."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from memx.cli import app
from memx.validation.drift import MAX_KL, MIN_TOP1_AGREEMENT, DriftReport, TaskAccuracy


def report(agreement: float, kl: float, task: TaskAccuracy | None = None) -> DriftReport:
    n = 40
    return DriftReport(package="p", precision="int8-qdq", reference="torch", segments=n, batch=2, stream_source="random", drift_tol=0.05,
                       output_max_error=[0.1] * n, top1_agreement=[agreement] * n, kl=[kl] * n, state_rel_error={"memory": [0.01] * n},
                       first_divergence=None, task_accuracy=task)


def test_agreement_and_kl_decide_without_a_task():
    assert MIN_TOP1_AGREEMENT > 0.75
    assert report(0.99, 0.001).passed and report(0.99, 0.001).gate == "logits"
    assert not report(0.75, 0.001).passed  # a 75%-agreement package fails by default
    assert not report(0.99, 2 * MAX_KL).passed
    loose = report(0.75, 0.001)
    loose.min_top1_agreement = 0.7
    assert loose.passed and loose.to_dict()["passed"] is True


def test_a_task_keeps_its_own_gate():
    acc = TaskAccuracy("majority", "items", 200, 800, reference=0.95, candidate=0.948, agreement=0.99)
    assert report(0.75, 0.001, acc).passed and report(0.75, 0.001, acc).gate == "task"
    acc.candidate = 0.90
    assert not report(0.99, 0.0, acc).passed


def test_memx_validate_exits_1_naming_the_failed_number(quantized, tmp_path):
    q = shutil.copytree(quantized("rmt-tiny", "int8-dynamic").path, tmp_path / "q")  # a preset: no task
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(q), "--segments", "20", "--batch", "2"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert "top-1 agreement" in ok.output and "at least 95%" in ok.output
    strict = runner.invoke(app, ["validate", str(q), "--segments", "20", "--batch", "2", "--min-agreement", "0.9999"], catch_exceptions=False)
    assert strict.exit_code == 1 and "FAIL" in strict.output and "at least 100%" in strict.output
