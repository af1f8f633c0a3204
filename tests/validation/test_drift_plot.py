"""The quantized drift plot shows what the verdict rests on: a PASS decided by task accuracy says
so (the state error above the drift tolerance is informational), a FAIL of the logits gate names
the bound; the plot and the saved JSON carry the memx version and a UTC time."""

from __future__ import annotations

import json

import numpy as np
import pytest

import memx
from memx.validation.drift import DriftReport, TaskAccuracy, drift_figure, save_report

pytest.importorskip("matplotlib")


def _report(task: bool, agreement: float = 0.97) -> DriftReport:
    n = 100
    state = list(np.geomspace(0.01, 0.2, n))  # crosses the 0.05 drift tolerance halfway
    acc = TaskAccuracy("majority", "items", 200, 800, reference=0.979, candidate=0.977, agreement=0.99) if task else None
    return DriftReport(package="p", precision="int8-qdq", reference="torch", segments=n, batch=4, stream_source="random", drift_tol=0.05,
                       output_max_error=[0.1] * n, top1_agreement=[agreement] * n, kl=[0.001] * n, state_rel_error={"memory": state},
                       first_divergence={"segment": 50, "state": "memory", "relative_error": 0.051}, task_accuracy=acc)


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_task_pass_says_the_gate_is_task_accuracy_and_drift_is_informational():
    report = _report(task=True)
    assert report.passed and max(report.state_rel_error["memory"]) > report.drift_tol
    line = report.verdict_line()
    assert line == "PASS: task accuracy 97.7% vs 97.9% (drop 0.20 <= 1 points; majority, items); state drift is informational"
    fig = drift_figure(report)
    title = fig._suptitle.get_text()
    assert title.startswith(line) and "int8-qdq vs torch" in title
    drift_ax, agree_ax = fig.axes
    assert "informational" in drift_ax.get_title() and "informational" in agree_ax.get_title()
    assert any(f"memx {memx.__version__}" in t.get_text() and "UTC" in t.get_text() for t in fig.texts)
    _close(fig)


def test_a_logits_fail_names_the_bound_and_draws_it():
    report = _report(task=False, agreement=0.9)
    assert not report.passed and report.gate == "logits"
    assert report.verdict_line().startswith("FAIL: top-1 agreement 90.00% (at least 95%)")
    fig = drift_figure(report)
    agree_ax = fig.axes[1]
    assert "(the gate)" in agree_ax.get_title()
    assert any(line.get_ydata()[0] == report.min_top1_agreement for line in agree_ax.get_lines())  # the bound is drawn
    assert agree_ax.get_ylim()[0] < report.min_top1_agreement
    _close(fig)


def test_saved_report_has_the_verdict_and_the_stamp(tmp_path):
    class Pkg:
        path = tmp_path

    report = _report(task=True)
    saved = save_report(Pkg(), report, "precision-vs-torch")
    data = json.loads((tmp_path / saved["json"]).read_text())
    assert data["verdict"] == report.verdict_line() and data["memx_version"] == memx.__version__ and data["created"].endswith(" UTC")
    assert (tmp_path / saved["png"]).read_bytes()[:4] == b"\x89PNG"
