"""memx profile: percentile and throughput math, interleaving, contender specs, the report
formats; timing on synthetic clocks so the tests assert exact numbers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from memx.errors import InputError, RegistryError
from memx.profiling import Contender, LatencyStats, Throughput, parse_contenders, profile, round_order
from memx.profiling.report import CSV_FIELDS, render_html, write_csv, write_json


def test_percentiles():
    s = LatencyStats.of(np.arange(1, 101))
    assert (s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.min_ms, s.mean_ms) == (100, 50.5, pytest.approx(90.1), pytest.approx(99.01), 100, 1, 50.5)
    one = LatencyStats.of([3.0])
    assert one.p50_ms == one.p99_ms == one.max_ms == 3.0
    with pytest.raises(InputError, match="no latency samples"):
        LatencyStats.of([])
    with pytest.raises(InputError, match="finite"):
        LatencyStats.of([1.0, float("nan")])


def test_throughput_is_work_over_time():
    t = Throughput.of([10.0, 10.0, 20.0], batch=2, tokens_per_step=16)
    assert t.tokens_per_s == pytest.approx(48 / 0.04) and t.segments_per_s == pytest.approx(6 / 0.04)


def test_contender_specs():
    assert Contender.parse("onnxruntime") == Contender("onnxruntime", None, "cpu")
    assert Contender.parse("onnxruntime:int8-dynamic@cuda") == Contender("onnxruntime", "int8-dynamic", "cuda")
    assert Contender.parse("torch@cuda:1").name == "torch@cuda:1"
    with pytest.raises(InputError, match=r"backend\[:precision\]\[@device\]"):
        Contender.parse("ONNX runtime")
    graphs = Contender.parse("torch:fp16@cuda+graphs")
    assert graphs == Contender("torch", "fp16", "cuda", "graphs") and graphs.name == "torch:fp16@cuda+graphs"
    assert graphs.stream_options == {"resident": True, "cuda_graphs": True} and Contender.parse("torch").stream_options == {}
    with pytest.raises(InputError, match="unknown contender mode") as e:
        Contender.parse("torch@cuda+fast")
    assert e.value.expected == ["exported", "fused", "graphs", "host", "resident"]
    fused = Contender.parse("onnxruntime:int8-qdq+fused")
    assert fused.stream_options == {"graph_passes": "auto"} and fused.name == "onnxruntime:int8-qdq+fused"
    with pytest.raises(InputError, match=r"contender mode \+fused is a mode of onnxruntime") as e:
        Contender.parse("torch+fused")
    assert e.value.expected == "onnxruntime+fused" and e.value.actual == "torch+fused"
    with pytest.raises(InputError, match="once each"):
        parse_contenders("torch,torch")


def test_rotation_puts_everyone_first_equally():
    names = ["a", "b", "c"]
    firsts = [round_order(names, r)[0] for r in range(9)]
    assert sorted(firsts) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert all(sorted(round_order(names, r)) == names for r in range(5))


class PositionClock:
    """A step costs 1 ms when it runs first in a round, 2 ms second, 3 ms third (cache
    effects, say); time only moves when the runner reads the clock."""

    def __init__(self, contenders: int):
        self.n, self.calls, self.now = contenders, 0, 0.0

    def __call__(self) -> float:
        if self.calls % 2 == 1:  # the read after a step
            position = (self.calls // 2) % self.n
            self.now += (position + 1) / 1e3
        self.calls += 1
        return self.now


def test_interleaving_cancels_position_effects(package_of):
    pkg = package_of("rmt-tiny")
    report = profile(pkg, "onnxruntime,torch,onnxruntime:fp16", segments=30, warmup=3, timer=PositionClock(3), progress=False)
    for c in report.contenders:
        assert np.unique(np.round(c.samples_ms, 6)).tolist() == [1.0, 2.0, 3.0]
        assert c.latency.mean_ms == pytest.approx(2.0)  # each went first, second and third equally often
    assert all(r["p50"] == pytest.approx(1.0) for r in report.ratios().values())
    assert [c.precision for c in report.contenders] == ["fp32", "fp32", "fp16"]


class DriftClock:
    """Every step of round r costs (1 + r) ms: the machine slows down during the run."""

    def __init__(self, contenders: int):
        self.n, self.calls, self.now = contenders, 0, 0.0

    def __call__(self) -> float:
        if self.calls % 2 == 1:
            self.now += (1 + (self.calls // 2) // self.n) / 1e3
        self.calls += 1
        return self.now


def test_drift_hits_every_contender_alike(package_of, tmp_path):
    report = profile(package_of("rmt-tiny"), ["onnxruntime", "torch"], batch=2, segments=20, warmup=5, timer=DriftClock(2), progress=False)
    a, b = report.contenders
    assert a.samples_ms == pytest.approx(b.samples_ms) and a.samples_ms[0] == pytest.approx(6.0)  # warm-up rounds 0-4 are dropped
    assert report.ratios()["torch"]["p50"] == pytest.approx(1.0)
    assert a.throughput.tokens_per_s == pytest.approx(2 * report.segment_len * 20 / (sum(a.samples_ms) / 1e3))
    assert a.state_bytes_per_step == 2 * 2 * 4 * 32 * 4  # read + write, 2 streams, memory[4, 32] float32

    write_json(report, tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["format"] == "memx.profile" and data["version"] == 1 and data["baseline"] == "onnxruntime"
    for c in data["contenders"]:
        assert set(c["latency_ms"]) >= {"p50", "p90", "p99", "max"} and len(c["samples_ms"]) == 20
    write_csv(report, tmp_path / "p.csv")
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == CSV_FIELDS and [r["name"] for r in rows] == ["onnxruntime", "torch"]
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "torch" in page and report.machine["cpu"] in page


def test_real_timing_runs_and_reports(package_of):
    report = profile(package_of("gmat-tiny"), "onnxruntime", segments=12, warmup=2, progress=False)
    c = report.contenders[0]
    assert c.latency.n == 12 and 0 < c.latency.p50_ms <= c.latency.p90_ms <= c.latency.p99_ms <= c.latency.max_ms
    assert report.peak_rss_mb > 0 and c.runtime["backend"] == "onnxruntime"


def test_profile_refuses_bad_settings(package_of):
    pkg = package_of("rmt-tiny")
    with pytest.raises(InputError, match="segment length"):
        profile(pkg, segment_len=10_000, progress=False)
    with pytest.raises(InputError, match="segments >= 1"):
        profile(pkg, segments=0, progress=False)
    with pytest.raises(RegistryError, match="onnxruntime"):
        profile(pkg, "tensorflow", segments=2, progress=False)


@pytest.mark.gpu
def test_cuda_contender_gets_event_timing(package_of):
    report = profile(package_of("rmt-tiny"), "torch,torch@cuda", segments=10, warmup=2, progress=False)
    cuda = report.contenders[1]
    assert cuda.gpu_latency is not None and cuda.gpu_latency.n == 10 and cuda.device_memory_mb > 0
    assert report.contenders[0].gpu_latency is None
