"""Regression tests for issue 17's bad-argument findings: each is named after what it got wrong."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from memx.errors import BatchMismatchError, DTypeError, InputError


@pytest.fixture(scope="module")
def rt(package_of):
    return runtimes.open(package_of("rmt-tiny"))


def _run(stream, steps: int = 2) -> None:
    rng = np.random.default_rng(0)
    for _ in range(steps):
        stream.step(rng.integers(0, stream.manifest.vocab_size, (stream.batch_size, 6)))


def test_reset_with_a_bool_mask_restarts_the_masked_rows_not_rows_0_and_1(rt):
    s = rt.stream(3)
    _run(s)
    before = s.state
    s.reset(np.array([True, False, False]))  # was read as the indices [1, 0, 0]: row 1 wiped
    after = s.state
    for name in before:
        assert not after[name][0].any() and np.array_equal(after[name][1:], before[name][1:]), name
    assert s.pending.tolist() == [True, False, False]
    with pytest.raises(BatchMismatchError, match=r"a reset mask needs one entry per row: expected \[3\], got \[2\]"):
        s.reset([True, False])


def test_reset_refuses_float_rows_instead_of_truncating_them(rt):
    s = rt.stream(2)
    _run(s)
    before = s.state
    with pytest.raises(DTypeError, match=r"reset rows must be integer row indices or a bool mask.*float64 \[0.7\]"):
        s.reset([0.7])  # was truncated to row 0
    assert all(np.array_equal(before[k], v) for k, v in s.state.items())


@pytest.mark.parametrize("size, error, text", [
    (2.5, DTypeError, r"batch_size must be an integer: expected int, got float 2.5"),
    ("3", DTypeError, r"batch_size must be an integer: expected int, got str '3'"),
    (None, DTypeError, r"batch_size must be an integer: expected int, got NoneType None"),
    (True, DTypeError, r"batch_size must be an integer"),
    (0, InputError, r"batch_size out of range: expected 1..65536, got 0"),
    (10**12, InputError, r"batch_size out of range: expected 1..65536, got 1000000000000"),
])
def test_stream_sizes_of_the_wrong_type_or_range_are_typed_errors(rt, size, error, text):
    with pytest.raises(error, match=text):
        rt.stream(size)
    assert rt.stream(np.int64(2)).batch_size == 2  # numpy integers are integers


@pytest.mark.parametrize("size", ["4", 2.5, None, 0, 1 << 20])
def test_pool_capacities_of_the_wrong_type_or_range_are_refused_when_made_not_at_the_first_step(rt, size):
    with pytest.raises(InputError, match="max_batch"):
        rt.pool(size)


@pytest.mark.parametrize("given", [None, [np.zeros(4, dtype=np.int64)], np.zeros((1, 4), dtype=np.int64)])
def test_pool_step_needs_a_mapping_of_stream_ids(rt, given):
    pool = rt.pool()
    pool.open()
    with pytest.raises(InputError, match=r"pool.step takes a mapping of stream id to its segment"):
        pool.step(given)
