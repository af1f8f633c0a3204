"""Calibration rollouts record the inputs of every graph (states included) at early and late
depths (the token sources they stream are tested in tests/validation/test_sources.py)."""

from __future__ import annotations

import numpy as np
import pytest

from memx.calibration.feeds import collect_feeds
from memx.errors import CalibrationError
from memx.validation.sources import RandomSource, TaskSource


def test_rollout_records_states_at_many_depths(package_of):
    pkg = package_of("memtr-majority")
    src = TaskSource("majority", 16, causal=pkg.manifest.causal, vocab_size=pkg.manifest.vocab_size)
    calib = collect_feeds(pkg, src, segments=12, horizon=60, streams=3, progress=False)
    feeds = calib.feeds["step"]
    assert len(feeds) == 12 == len(calib.depths) and calib.depths[0] == 0 and calib.depths[-1] == 59
    assert set(feeds[0]) == {t.name for t in pkg.manifest.graphs[0].inputs}
    assert np.abs(feeds[0]["state_in.memory"]).max() == 0  # a fresh stream
    late = np.abs(feeds[-1]["state_in.memory"]).max()
    assert late > 0.1 and calib.state_absmax["memory"][-1] == pytest.approx(late)
    first = collect_feeds(pkg, src, segments=12, streams=3, mode="first", progress=False)
    assert first.depths == [0] * 12
    assert all(np.abs(f["state_in.memory"]).max() == 0 for f in first.feeds["step"])


def test_rollout_records_every_graph_of_a_multi_graph_package(package_of):
    pkg = package_of("memformer-majority")
    calib = collect_feeds(pkg, RandomSource(pkg.manifest.vocab_size), segments=4, horizon=8, streams=2, progress=False)
    assert [len(calib.feeds[g.name]) for g in pkg.manifest.graphs] == [4, 4]
    assert "encoder_hidden" in calib.feeds["decoder"][0]


def test_rollout_settings_are_checked(package_of):
    pkg = package_of("rmt-tiny")
    src = RandomSource(pkg.manifest.vocab_size)
    with pytest.raises(CalibrationError, match="horizon"):
        collect_feeds(pkg, src, segments=20, horizon=10, progress=False)
    with pytest.raises(CalibrationError, match="segment length"):
        collect_feeds(pkg, src, segments=2, segment_len=10_000, progress=False)
    with pytest.raises(CalibrationError, match="depth mode"):
        collect_feeds(pkg, src, segments=2, mode="sometimes", progress=False)
