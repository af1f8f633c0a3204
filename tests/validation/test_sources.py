"""Token sources: token files and arrays are checked, texts are tokenized, task episodes and
random tokens stream, and a package without a task falls back to random tokens with a warning."""

from __future__ import annotations

import numpy as np
import pytest

from memx.errors import CalibrationError, RegistryError
from memx.validation.sources import ArraySource, RandomSource, TaskSource, TextSource, default_source, load_token_file


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
