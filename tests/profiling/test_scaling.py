"""Scaling against the full-history baseline: history parsing, the baseline's config and
cache, and the report (structure and state sizes; no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

from memx.errors import InputError
from memx.models import build_model
from memx.profiling.report import render_scaling_html
from memx.profiling.scaling import baseline_config, parse_histories, scaling


def test_parse_histories():
    assert parse_histories("1k,4k,16k,64k") == [1024, 4096, 16384, 65536]
    assert parse_histories("100, 2K ,1m") == [100, 2048, 1024**2]
    for bad in ("1k,1k", "4k,1k", "lots", "", "0"):
        with pytest.raises(InputError):
            parse_histories(bad)


def _run(model, tokens, steps, seg):
    b = tokens.shape[0]
    state = [torch.zeros(b, *s.shape) for s in model.state_specs()]
    outs = []
    for i in range(steps):
        out = model(tokens[:, i * seg : (i + 1) * seg], torch.full((b,), seg), torch.full((b,), i == 0), *state)
        outs.append(out[0])
        state = list(out[1:])
    return outs, state


def test_kv_cache_keeps_exactly_the_last_history_tokens():
    # one layer: a cached key/value depends on its own token only, so what left the cache has no way back
    model = build_model("kvcache", dict(vocab_size=64, d_model=32, n_heads=2, n_layers=1, d_ff=64, max_segment_len=8, history=16)).eval()
    tokens = torch.randint(3, 64, (1, 40))
    with torch.no_grad():
        base, state = _run(model, tokens, 5, 8)
        assert state[-1].sum() == 16  # the cache is full
        changed = tokens.clone()
        changed[0, 20] = 2  # segment 4 (tokens 32..39) attends to the cache, tokens 16..31
        within, _ = _run(model, changed, 5, 8)
        assert not torch.allclose(within[4], base[4])
        old = tokens.clone()
        old[0, 10] = 2  # token 10 left the cache (which holds 16..31) before segment 4
        outside, _ = _run(model, old, 5, 8)
        torch.testing.assert_close(outside[4], base[4])


def test_baseline_matches_the_package(package_of):
    pkg = package_of("memtr-tiny")
    cfg = baseline_config(pkg, 512, 16)
    c = pkg.manifest.config
    assert (cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["d_ff"], cfg["vocab_size"]) == (c["d_model"], c["n_layers"], c["n_heads"], c["d_ff"], c["vocab_size"])
    assert cfg["history"] == 512 and cfg["max_segment_len"] == 16


def test_scaling_report(package_of):
    pkg = package_of("rmt-tiny")
    report = scaling(pkg, "64,256", segments=4, warmup=1, progress=False)
    assert [p.history for p in report.points] == [64, 256]
    d, layers = pkg.manifest.config["d_model"], pkg.manifest.config["n_layers"]
    for p in report.points:
        assert p.memory_state_bytes == 4 * 32 * 4  # memory[4, 32] float32, whatever the history
        assert p.baseline_state_bytes == 2 * layers * p.history * d * 4 + p.history * 4  # K and V per layer + validity
        assert p.memory.n == p.baseline.n == 4
    assert report.memory_growth()[0] == 1.0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["format"] == "memx.profile.scaling" and data["points"][1]["baseline_over_memory_p50"] > 0
    assert "<img" in render_scaling_html(report) and "256" in render_scaling_html(report)
    alone = scaling(pkg, [32], segments=2, warmup=0, with_baseline=False, progress=False)
    assert alone.points[0].baseline is None and alone.baseline_config is None
