"""Calibration sources and rollouts: token files are checked, rollouts record the inputs of
every graph (states included) at early and late depths."""

from __future__ import annotations

import numpy as np
import pytest

from memx.calibration.feeds import ArraySource, RandomSource, TaskSource, TextSource, collect_feeds, default_source, load_token_file
from memx.errors import CalibrationError, RegistryError


def test_token_files(tmp_path):
    np.save(tmp_path / "t.npy", np.arange(100) % 50)
    src = load_token_file(tmp_path / "t.npy", 64)
    rows = src.streams(4, 60, np.random.default_rng(0))
    assert rows.shape == (4, 60) and rows.dtype == np.int64
    np.testing.assert_array_equal(rows[1, :25], (np.arange(25, 50)) % 50)  # contiguous pieces of one text, wrapped
    np.testing.assert_array_equal(rows[0, 25:50], rows[0, :25])
    np.savez(tmp_path / "z.npz", tokens=np.ones((2, 10), np.int32), other=np.zeros(3))
    assert load_token_file(tmp_path / "z.npz", 64).streams(3, 10, np.random.default_rng(0)).shape == (3, 10)


@pytest.mark.parametrize("content, match", [
    (np.array([1.5, 2.0]), "integers"),
    (np.array([1, 2, 99]), r"expected ids in 0\.\.63, got ids in 1\.\.99"),
    (np.zeros((0,), np.int64), "empty"),
    (np.zeros((2, 2, 2), np.int64), "1-D or 2-D"),
])
def test_bad_token_arrays_are_refused(tmp_path, content, match):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(CalibrationError, match=match):
        load_token_file(tmp_path / "bad.npy", 64)


def test_bad_token_files_are_refused(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_token_file(tmp_path / "missing.npy", 64)
    (tmp_path / "t.txt").write_text("1 2 3")
    with pytest.raises(CalibrationError, match=r"\.npy or \.npz"):
        load_token_file(tmp_path / "t.txt", 64)
    np.savez(tmp_path / "two.npz", a=np.ones(3, np.int64), b=np.ones(3, np.int64))
    with pytest.raises(CalibrationError, match="'tokens'"):
        load_token_file(tmp_path / "two.npz", 64)
    with pytest.raises(CalibrationError, match="too short"):
        ArraySource(np.arange(3), 64).streams(8, 10, np.random.default_rng(0))


def test_text_and_task_sources():
    text = TextSource(["ab", "cde"], lambda s: [ord(c) - ord("a") for c in s], 64)
    np.testing.assert_array_equal(text.tokens, [0, 1, 2, 3, 4])
    with pytest.raises(CalibrationError, match="vocabulary"):
        TextSource(["z"], lambda s: [1000], 64)
    task = TaskSource("majority", 16, causal=True, vocab_size=64)
    rows = task.streams(3, 500, np.random.default_rng(0))
    assert rows.shape == (3, 500) and rows.max() < 64
    with pytest.raises(RegistryError, match="majority"):
        TaskSource("no-such-task", 16, causal=True, vocab_size=64)


def test_default_source_warns_without_a_task(package_of):
    src, warning = default_source(package_of("rmt-tiny"), 8)
    assert isinstance(src, RandomSource) and "random" in warning
    src, warning = default_source(package_of("memtr-majority"), 16)
    assert isinstance(src, TaskSource) and warning is None


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
