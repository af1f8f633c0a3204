"""The profile report people read: latency on a log axis, so a slow contender's outliers do not
squash the fast ones into a sliver; every report stamped with the memx version, a UTC time and
the machine."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import memx
from memx.profiling.report import latency_figure, render_html, write_json
from memx.profiling.runner import ContenderResult, ProfileReport
from memx.profiling.stats import LatencyStats, Throughput

pytest.importorskip("matplotlib")
MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "platform": "Linux-test"}


def _contender(name: str, samples: np.ndarray) -> ContenderResult:
    return ContenderResult(name, name.split(":")[0], "fp32", "cpu", LatencyStats.of(samples), Throughput.of(samples, batch=1, tokens_per_step=32),
                           [float(v) for v in samples], 1024, 100.0)


def _report() -> ProfileReport:
    """torch near 20 ms with 400 ms outliers; two ONNX Runtime contenders near 0.3-0.4 ms."""
    rng = np.random.default_rng(0)
    torch = rng.lognormal(np.log(20), 0.2, 200)
    torch[::40] = 400.0
    contenders = [_contender("torch", torch), _contender("onnxruntime", rng.lognormal(np.log(0.4), 0.1, 200)),
                  _contender("onnxruntime:int8-dynamic", rng.lognormal(np.log(0.3), 0.1, 200))]
    return ProfileReport("p.memx", "rmt", 1, 32, 200, 10, 0, contenders, 300.0, MACHINE)


def _axis_fraction(fig, ax, lo: float, hi: float) -> float:
    """The fraction of the x axis's width that the data range [lo, hi] covers as drawn."""
    fig.canvas.draw()
    (x0, _), (x1, _) = ax.transData.transform([(lo, 1), (hi, 1)])
    return (x1 - x0) / ax.bbox.width


def test_latency_axes_are_logarithmic_and_every_contender_is_readable():
    report = _report()
    fig = latency_figure(report)
    hist, stream = fig.axes
    assert hist.get_xscale() == "log" and stream.get_yscale() == "log"
    for c in report.contenders[1:]:  # the fast ones: their samples span a readable part of the axis (a linear axis gave them ~0.01%)
        assert _axis_fraction(fig, hist, min(c.samples_ms), max(c.samples_ms)) > 0.03, c.name
    lo, hi = hist.get_xlim()
    assert all(lo <= c.latency.p50_ms <= hi for c in report.contenders)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_reports_are_stamped_with_version_time_and_machine(tmp_path):
    report = _report()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", report.created) and report.memx_version == memx.__version__
    page = render_html(report)
    stamp = re.search(r'<p class="stamp">(.*?)</p>', page)
    assert stamp is not None
    assert f"memx {memx.__version__}" in stamp[1] and report.created in stamp[1] and "Test CPU 9000 (2 cores)" in stamp[1] and "Linux-test" in stamp[1]
    fig = latency_figure(report)
    assert any(f"memx {memx.__version__}" in t.get_text() and report.created in t.get_text() for t in fig.texts)  # the PNG alone says it too
    import matplotlib.pyplot as plt

    plt.close(fig)
    write_json(report, tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["memx_version"] == memx.__version__ and data["created"] == report.created


def test_a_zero_sample_does_not_break_the_log_axis():
    zero = np.array([0.0, 1.0, 2.0, 3.0] * 10)
    fig = latency_figure(ProfileReport("p.memx", "rmt", 1, 32, 40, 0, 0, [_contender("onnxruntime", zero)], 1.0, MACHINE))
    assert fig.axes[0].get_xlim()[0] > 0
    import matplotlib.pyplot as plt

    plt.close(fig)
