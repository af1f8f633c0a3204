"""trtexec hand-off: the command built from the manifest, its summary parsed (TensorRT 8
and 10 wording), and a run through a stand-in trtexec on PATH."""

from __future__ import annotations

import json
import os
import stat

import pytest

from memx.errors import BackendUnavailableError, InputError
from memx.profiling.trtexec import parse_trtexec, run_trtexec, shapes_argument

TRT10 = """[11/23/2026-07:00:01] [I] === Performance summary ===
[11/23/2026-07:00:01] [I] Throughput: 2345.67 qps
[11/23/2026-07:00:01] [I] Latency: min = 0.401 ms, max = 0.912 ms, mean = 0.425 ms, median = 0.420 ms, percentile(90%) = 0.440 ms, percentile(95%) = 0.451 ms, percentile(99%) = 0.530 ms
[11/23/2026-07:00:01] [I] Enqueue Time: min = 0.020 ms, max = 0.100 ms, mean = 0.030 ms, median = 0.029 ms, percentile(90%) = 0.035 ms, percentile(95%) = 0.040 ms, percentile(99%) = 0.060 ms
[11/23/2026-07:00:01] [I] GPU Compute Time: min = 0.380 ms, max = 0.880 ms, mean = 0.400 ms, median = 0.398 ms, percentile(90%) = 0.410 ms, percentile(95%) = 0.420 ms, percentile(99%) = 0.500 ms
[11/23/2026-07:00:01] [I] Total Host Walltime: 3.001 s
"""
TRT8 = """[I] Throughput: 812.3 qps
[I] Latency: min = 1.1 ms, max = 2.5 ms, mean = 1.2 ms, median = 1.19 ms, percentile(99%) = 1.9 ms
[I] GPU Compute Time: min = 1.0 ms, max = 2.4 ms, mean = 1.1 ms, median = 1.09 ms, percentile(99%) = 1.8 ms
"""


def test_parse_summaries():
    a = parse_trtexec(TRT10)
    assert a["throughput_qps"] == 2345.67 and a["gpu_compute_ms"]["median"] == 0.398 and a["gpu_compute_ms"]["p99"] == 0.5
    assert a["latency_ms"]["p90"] == 0.44 and a["enqueue_ms"]["max"] == 0.1
    b = parse_trtexec(TRT8)
    assert b["latency_ms"] == {"min": 1.1, "max": 2.5, "mean": 1.2, "median": 1.19, "p99": 1.9}
    with pytest.raises(InputError, match="no performance summary"):
        parse_trtexec("[E] Error[4]: engine deserialization failed")


def test_shapes_from_the_manifest(package_of):
    m = package_of("memformer-tiny").manifest
    assert shapes_argument(m.graph_named("encoder"), batch=4, segment_len=16) == "tokens:4x16,lengths:4,reset:4,state_in.memory:4x4x32"
    assert shapes_argument(m.graph_named("decoder"), batch=1, segment_len=8).startswith("tokens:1x8,lengths:1,encoder_hidden:1x8x32")


def test_run_with_a_stand_in_trtexec(package_of, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\ncat <<'END'\n{TRT10}END\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    engine = tmp_path / "step.plan"
    engine.write_bytes(b"\0")
    pkg = package_of("rmt-tiny")
    result = run_trtexec(engine, pkg.manifest, batch=2, segment_len=8)
    argv = (tmp_path / "argv").read_text()
    assert f"--loadEngine={engine}" in argv and "--shapes=tokens:2x8,lengths:2,reset:2,state_in.memory:2x4x32" in argv
    assert result["graph"] == "step" and result["gpu_compute_ms"]["median"] == 0.398
    json.dumps(result)
    with pytest.raises(InputError, match="several graphs"):
        run_trtexec(engine, package_of("memformer-tiny").manifest)
    with pytest.raises(InputError, match="engine file not found"):
        run_trtexec(tmp_path / "missing.plan", pkg.manifest)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendUnavailableError, match="trtexec is not on PATH"):
        run_trtexec(engine, pkg.manifest)
