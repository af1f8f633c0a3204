"""The reference and the candidate run side by side, each on its share of the CPU cores, shared
by the parity check (:func:`memx.validation.parity.validate`) and the precision check
(:func:`memx.validation.drift.compare_precision`).

One after the other, each library with its default thread pool, two pools spin against each
other on a small machine (2-3x slower on 2 cores, far worse under load); side by side, each on
half the cores, torch and ONNX Runtime release the GIL while they compute:

- :class:`ReferenceAhead`: the reference's segments in a worker thread, in segment order, up to
  ``depth`` segments ahead of the candidate in the caller's thread;
- :func:`side_by_side`: two independent runs (the task accuracy through the reference and
  through the candidate), one in a worker thread;
- :func:`thread_split` and :func:`torch_threads`: how many threads each side gets.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

import numpy as np

# how many segments the reference may run ahead of the candidate (each holds its outputs:
# B x S x V float32 logits, 2 MiB for rmt-small at batch 4)
REFERENCE_AHEAD = 8

P = TypeVar("P")  # what one segment runs on (a parity StreamPlan, a drift segment's tokens and inputs)
T = TypeVar("T")
U = TypeVar("U")


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadSplit:
    """CPU threads for a validation that runs the reference and the candidate side by side:
    ``torch`` for torch's intra-op pool (process-wide: the reference's, and a torch candidate's),
    ``candidate`` and ``reference`` for an ONNX Runtime candidate on the CPU and an ONNX Runtime
    reference; None leaves a setting as it is."""

    torch: int | None
    candidate: int | None
    reference: int | None = None


def thread_split(backend: str, device: str, reference: str, backend_options: dict[str, Any],
                 reference_options: dict[str, Any], cores: int | None = None) -> ThreadSplit:
    """Side by side on the CPU, each half of the cores: one thread each on a 2-core machine,
    where two single-threaded runs beat two 2-thread pools that spin against each other by 2-3x.
    A candidate on another device leaves torch's threads as they are. Thread settings the
    caller gave (``threads``, ``intra_op_threads``, ``session_options``, ``providers``) are kept."""
    cores = cores or cpu_cores()
    on_cpu = device == "cpu"
    half = max(1, cores // 2)
    torch_used = reference == "torch" or backend == "torch"
    torch_given = "threads" in reference_options or (backend == "torch" and "threads" in backend_options)
    torch_threads = half if torch_used and on_cpu and not torch_given else None
    candidate = max(1, cores - half) if backend == "onnxruntime" and on_cpu and not _ort_threads_given(backend_options) else None
    ort_reference = half if reference == "onnxruntime" and on_cpu and not _ort_threads_given(reference_options) else None
    return ThreadSplit(torch_threads, candidate, ort_reference)


def _ort_threads_given(options: dict[str, Any]) -> bool:
    return bool({"intra_op_threads", "session_options", "providers"} & options.keys())


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block and restored after (None: untouched).
    A thread started inside the block takes ``n`` at its first parallel op (torch's lazy per-thread init)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Segment = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (outputs, state) after one segment


class ReferenceAhead(Generic[P]):
    """The reference's segments computed in one worker thread, in segment order, up to ``depth``
    segments ahead of the caller, who meanwhile runs the candidate (torch and ONNX Runtime
    release the GIL while they compute). ``next()`` gives (plan, outputs, state) of the next
    segment, or raises what its step raised. The plans are drawn from ``plans`` in the caller's
    thread, in segment order. Once a step has failed, the steps queued after it do not run (the
    stream did not advance); leaving the block drops what is still queued (a step already
    running finishes).

        with ReferenceAhead(plans, step, segments) as ahead:
            for seg in range(segments):
                plan, out_r, state_r = ahead.next()
    """

    def __init__(self, plans: Iterator[P], step: Callable[[int, P], Segment], segments: int, depth: int = REFERENCE_AHEAD):
        self._plans, self._step, self._segments, self._depth = plans, step, segments, depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="memx-reference")
        self._queue: deque[Future[tuple[P, dict[str, np.ndarray], dict[str, np.ndarray]]]] = deque()
        self._submitted = 0
        self._failed = False

    def _run(self, seg: int, plan: P) -> tuple[P, dict[str, np.ndarray], dict[str, np.ndarray]]:  # in the worker thread
        if self._failed:
            raise RuntimeError(f"reference segment {seg} not run: an earlier one failed")  # the caller stops at that one and never sees this
        try:
            out, state = self._step(seg, plan)
        except BaseException:
            self._failed = True
            raise
        return plan, out, state

    def next(self) -> tuple[P, dict[str, np.ndarray], dict[str, np.ndarray]]:
        while len(self._queue) < self._depth and self._submitted < self._segments:
            self._queue.append(self._pool.submit(self._run, self._submitted, next(self._plans)))
            self._submitted += 1
        return self._queue.popleft().result()

    def __enter__(self) -> "ReferenceAhead[P]":
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._queue:
            f.cancel()
        self._pool.shutdown(wait=True)


def side_by_side(background: Callable[[], T], foreground: Callable[[], U]) -> tuple[T, U]:
    """``background()`` in a worker thread while ``foreground()`` runs in this one; both results.
    Both always finish (the worker is waited for) before an error of either is raised, the
    background's first."""
    with ThreadPoolExecutor(1, thread_name_prefix="memx-reference") as pool:
        later = pool.submit(background)
        try:
            front = foreground()
        finally:
            behind = later.result()  # waits; raises the background's error, before the foreground's (if both failed)
    return behind, front
