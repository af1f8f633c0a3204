"""The fast parity path (issue 20) checks what the plain loop checks: the reference runs in a
second thread ahead of the candidate on the same segments, the float32 comparison gives exactly
the float64 one's error and index, a failing reference stops the run with its own error, and
torch's thread count is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memx import runtimes
from memx.errors import BackendRunError
from memx.package import snapshot as snap
from memx.validation.parity import ThreadSplit, Worst, _compare, _compare_float64, plan_segment, thread_split, validate
from tests.validation.failing_reference import FailingRMT, failing_reference_options


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 5, 7)).astype(np.float32)
    cases = [(a, a + rng.standard_normal(a.shape).astype(np.float32) * 1e-6), (a, a.copy())]
    # float32 differences that tie while the exact ones do not: 1 + 2^-23 - x rounds alike for close x
    big = np.full(8, 1.0 + 2.0**-23, np.float32)
    small = np.array([0.0, 0.0, 2.0**-30, 0.0, 2.0**-31, 0.0, 0.0, 2.0**-30], np.float32)
    cases += [(big, small), (small, big), (-big, small)]
    huge = np.array([3e38, -3e38, 1.0], np.float32)  # the float32 difference overflows, the float64 one does not
    cases += [(huge, -huge)]
    for bad in (np.nan, np.inf, -np.inf):
        b = a.copy()
        b[1, 2, 3] = bad
        cases += [(a, b), (b, a)]
    cases += [(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0, 4), np.float32)), (a, a[:, :4])]
    cases += [(a.astype(np.float64), a.astype(np.float64) + 1e-9), (a, a.astype(np.float64) + 1e-7), (np.arange(6).reshape(2, 3), np.arange(6)[::-1].reshape(2, 3))]
    return cases


@pytest.mark.parametrize("ref, got", _cases())
def test_compare_gives_the_float64_error_and_index(ref, got):
    err, index = _compare(ref, got)
    want_err, want_index = _compare_float64(ref, got)
    assert (err, index) == (want_err, want_index) or (np.isinf(err) and np.isinf(want_err) and index == want_index)


def test_compare_random_float32_pairs_match_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(1, 4)))
        a = rng.standard_normal(shape).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 4))
        b = (a + rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 0)).astype(np.float32)
        b.flat[rng.integers(0, b.size)] = a.flat[0]  # some exact agreement, some ties
        assert _compare(a, b) == _compare_float64(a, b)


def _sequential(pkg, *, segments: int, batch: int, seed: int, teacher_forced: bool, reset_prob: float = 0.03) -> tuple[list[float], Worst]:
    """The plain loop: one reference step, one candidate step, compare; segment after segment."""
    m = pkg.manifest
    ref_s = runtimes.open(pkg, backend="torch").stream(batch)
    cand_s = runtimes.open(pkg, backend="onnxruntime").stream(batch)
    rng = np.random.default_rng(seed)
    per_segment, worst, previous = [], Worst(), {}
    for seg in range(segments):
        plan = plan_segment(rng, batch=batch, vocab=m.vocab_size, seg_min=m.segment["min"], seg_max=m.segment["max"], reset_prob=reset_prob)
        plan.extras = m.sample_inputs(rng, batch, plan.tokens.shape[1])
        out_r = ref_s.step(plan.tokens, plan.lengths, plan.reset, **plan.extras)
        state_r = ref_s.state
        if teacher_forced and seg > 0:
            cand_s.restore(snap.encode(snap.SnapshotData(cand_s.model_id, previous, np.zeros(batch, dtype=bool), seg)))
        out_c = cand_s.step(plan.tokens, plan.lengths, plan.reset, **plan.extras)
        state_c = cand_s.state
        previous = state_r
        pairs = [(k, out_r[k], out_c[k]) for k in out_r] + [(f"state.{k}", v, state_c[k]) for k, v in state_r.items()]
        seg_max = 0.0
        for name, r, c in pairs:
            err, index = _compare_float64(r, c)
            seg_max = max(seg_max, err)
            if worst.segment < 0 or err > worst.error:
                worst = Worst(err, seg, name, index)
        per_segment.append(seg_max)
    return per_segment, worst


@pytest.mark.parametrize("teacher_forced", [False, True])
def test_the_pipelined_run_reports_what_the_plain_loop_measures(package_of, teacher_forced):
    pkg = package_of("rmt-tiny")
    threads = torch.get_num_threads()
    report = validate(pkg, segments=12, batch=3, seed=4, progress=False, teacher_forced=teacher_forced, threads=ThreadSplit(threads, None))
    per_segment, worst = _sequential(pkg, segments=12, batch=3, seed=4, teacher_forced=teacher_forced)
    assert report.per_segment_max == per_segment
    assert report.worst == worst
    assert torch.get_num_threads() == threads


def test_a_failing_reference_stops_the_run_with_its_error(package_of):
    pkg = package_of("rmt-tiny")
    threads = torch.get_num_threads()
    with pytest.raises(BackendRunError, match="reference broke"):
        validate(pkg, segments=40, batch=2, progress=False, reference_options=failing_reference_options(fail_at=4))
    assert FailingRMT.calls == 4  # the segments queued after the failure never ran
    assert torch.get_num_threads() == threads


def test_thread_split_halves_the_cores_and_keeps_what_the_caller_set():
    assert thread_split("onnxruntime", "cpu", "torch", {}, {}, cores=2) == ThreadSplit(1, 1)
    assert thread_split("onnxruntime", "cpu", "torch", {}, {}, cores=16) == ThreadSplit(8, 8)
    assert thread_split("onnxruntime", "cpu", "torch", {}, {}, cores=1) == ThreadSplit(1, 1)
    assert thread_split("onnxruntime", "cpu", "torch", {"intra_op_threads": 4}, {"threads": 2}, cores=2) == ThreadSplit(None, None)
    assert thread_split("onnxruntime", "cuda", "torch", {}, {}, cores=8) == ThreadSplit(None, None)  # the candidate needs no CPU threads
    assert thread_split("torch", "cpu", "torch", {}, {}, cores=4) == ThreadSplit(2, None)
    assert thread_split("tensorrt", "cuda", "torch", {}, {}, cores=4) == ThreadSplit(None, None)
    assert thread_split("onnxruntime", "cpu", "onnxruntime", {}, {}, cores=4) == ThreadSplit(None, 2, 2)
