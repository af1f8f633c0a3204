"""The side-by-side precision check reports what the plain loop measures: compare_precision runs
the reference in a second thread ahead of the quantized candidate, and the task accuracy's two
passes side by side, on the same segments in the same order; every number of the report is the
one the plain loop (reference step, candidate step, metrics; then one task pass after the other)
gives, a failing reference stops the run with its own error, and torch's thread count is left
as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from memx import runtimes
from memx.errors import BackendRunError
from memx.package.files import Package
from memx.validation.accuracy import runtime_task_accuracy
from memx.validation.drift import DriftReport, DriftTally, TaskAccuracy, compare_precision, open_reference, task_plan
from memx.validation.parity import ReferenceAhead as ParityReferenceAhead
from memx.validation.parity import thread_split as parity_thread_split
from memx.validation.sidebyside import ReferenceAhead, ThreadSplit, side_by_side, thread_split
from memx.validation.sources import RandomSource, TaskSource
from tests.validation.failing_reference import FailingRMT, failing_reference_options


def _plain_task_accuracy(pkg: Package, ref_rt, cand_rt, *, segments: int) -> TaskAccuracy | None:
    """task_accuracy as it was: the reference's pass, then the candidate's (the same plan)."""
    plan = task_plan(pkg, segments=segments)
    if plan is None:
        return None
    ref = runtime_task_accuracy(ref_rt, plan.task, items=plan.items, segment_len=plan.segment_len)
    cand = runtime_task_accuracy(cand_rt, plan.task, items=plan.items, segment_len=plan.segment_len)
    return plan.result(ref, cand)


def _plain(pkg: Package, *, against: str = "torch", segments: int, batch: int, seed: int, drift_tol: float = 0.05, with_task: bool = True) -> DriftReport:
    """compare_precision as it was: one reference step, one candidate step, the metrics; segment after segment."""
    m = pkg.manifest
    ref_rt, ref_name = open_reference(pkg, against)
    cand_rt = runtimes.open(pkg, backend="onnxruntime")
    seg = m.segment["max"]
    source = TaskSource(m.task, seg, causal=m.causal, vocab_size=m.vocab_size) if m.task else RandomSource(m.vocab_size)
    tokens = source.streams(batch, segments * seg, np.random.default_rng(seed))
    lengths = np.full(batch, seg, dtype=np.int64)
    ref_s, cand_s = ref_rt.stream(batch), cand_rt.stream(batch)
    tally = DriftTally.for_package(m, lengths, drift_tol)  # the metrics are the check's own; what differs is the order of the steps
    extra_rng = np.random.default_rng(seed + 1)
    for d in range(segments):
        chunk = tokens[:, d * seg : (d + 1) * seg]
        extras = m.sample_inputs(extra_rng, batch, seg)
        out_r = ref_s.step(chunk, **extras)
        out_c = cand_s.step(chunk, **extras)
        tally.add(d, out_r, ref_s.state, out_c, cand_s.state)
    acc = _plain_task_accuracy(pkg, ref_rt, cand_rt, segments=segments) if with_task else None
    return DriftReport(
        package=str(pkg.path), precision=m.precision, reference=ref_name, segments=segments, batch=batch, stream_source=source.describe(),
        drift_tol=drift_tol, output_max_error=tally.output_max_error, top1_agreement=tally.top1_agreement, kl=tally.kl,
        state_rel_error=tally.state_rel_error, first_divergence=tally.first, task_accuracy=acc, runtime=cand_rt.describe(), against=str(against),
    )


def _same_threads() -> ThreadSplit:
    """The plain loop's threads on both sides (torch's as they are, ONNX Runtime's default), so
    that any difference is the pipeline's, not a thread count's."""
    return ThreadSplit(torch.get_num_threads(), None)


@pytest.mark.parametrize("with_task", [True, False])
def test_the_side_by_side_check_reports_what_the_plain_loop_measures(quantized, with_task):
    pkg = quantized("gmat-majority", "int8-qdq")  # a task: the task accuracy's passes too
    threads = torch.get_num_threads()
    report = compare_precision(pkg, segments=30, batch=3, seed=5, drift_tol=0.01, with_task=with_task, progress=False, threads=_same_threads())
    plain = _plain(pkg, segments=30, batch=3, seed=5, drift_tol=0.01, with_task=with_task)
    assert report.to_dict() == plain.to_dict()  # every per-segment curve and number, exactly
    assert len(report.kl) == 30 and (report.task_accuracy is not None) == with_task
    assert torch.get_num_threads() == threads


def test_without_a_task_and_against_a_reference_package(quantized, package_of):
    rmt = quantized("rmt-tiny", "int8-dynamic")  # a preset: no task, random tokens
    assert compare_precision(rmt, segments=12, batch=2, seed=1, progress=False, threads=_same_threads()).to_dict() == _plain(rmt, segments=12, batch=2, seed=1).to_dict()
    fp16, fp32 = quantized("gmat-majority", "fp16"), package_of("gmat-majority")  # ONNX Runtime on both sides
    report = compare_precision(fp16, against=fp32.path, segments=10, batch=2, with_task=False, progress=False)  # the default split: one ORT pool per side
    assert report.to_dict() == _plain(fp16, against=str(fp32.path), segments=10, batch=2, seed=0, with_task=False).to_dict()


def test_a_failing_reference_stops_the_check_with_its_error(quantized):
    pkg = quantized("rmt-tiny", "int8-dynamic")
    threads = torch.get_num_threads()
    with pytest.raises(BackendRunError, match="reference broke"):
        compare_precision(pkg, segments=40, batch=2, progress=False, reference_options=failing_reference_options(fail_at=4))
    assert FailingRMT.calls == 4  # the segments queued after the failure never ran
    assert torch.get_num_threads() == threads


def test_the_reference_runs_in_its_own_thread_on_its_share_of_threads(quantized):
    pkg = quantized("gmat-majority", "int8-qdq")
    threads = torch.get_num_threads()
    want = threads + 1  # differs from the caller's, whatever MEMX_TEST_THREADS is
    from memx.models.gmat import GMAT, GMATConfig

    class CountingGMAT(GMAT):
        seen: list[tuple[int, str]] = []

        def forward(self, *args):
            type(self).seen.append((torch.get_num_threads(), threading.current_thread().name))
            return super().forward(*args)

    report = compare_precision(pkg, segments=6, batch=2, progress=False, threads=ThreadSplit(want, 1),
                               reference_options={"factory": lambda config: CountingGMAT(GMATConfig(**config))})
    assert report.task_accuracy is not None
    assert len(CountingGMAT.seen) > 6  # the drift segments, then the task accuracy's pass
    assert {n for n, _ in CountingGMAT.seen} == {want}
    assert all(name.startswith("memx-reference") for _, name in CountingGMAT.seen)
    assert torch.get_num_threads() == threads


def test_side_by_side_gives_both_results_and_the_errors():
    main = threading.current_thread().name
    assert side_by_side(lambda: threading.current_thread().name, lambda: threading.current_thread().name)[1] == main
    back, front = side_by_side(lambda: 1, lambda: 2)
    assert (back, front) == (1, 2)
    finished = threading.Event()

    def slow_background():
        finished.wait(0.2)
        finished.set()
        return 1

    def failing_foreground():
        raise ValueError("candidate broke")

    with pytest.raises(ValueError, match="candidate broke"):
        side_by_side(slow_background, failing_foreground)
    assert finished.is_set()  # the background ran to its end before the error came out

    def failing_background():
        raise KeyError("reference broke")

    with pytest.raises(KeyError, match="reference broke"):
        side_by_side(failing_background, lambda: 2)


def test_parity_keeps_its_names():
    assert ParityReferenceAhead is ReferenceAhead and parity_thread_split is thread_split
    assert thread_split("onnxruntime", "cpu", "onnxruntime", {}, {}, cores=2) == ThreadSplit(None, 1, 1)  # compare_precision against a package
