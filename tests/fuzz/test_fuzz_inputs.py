"""Fuzzing the Python runtime's public entry points (issue 17): generated arguments to
``Runtime.stream/pool``, ``Stream.step/reset/restore`` and ``StreamPool.step/reset/close/restore``
— wrong dtypes, ranks, sizes, values, Python objects where arrays belong — on the ONNX Runtime
and torch backends. Every call returns or raises a typed memx error, and a refused call leaves
every stream's state as it was."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from memx import runtimes
from tests.fuzz.generate import Tally, cases, mutate_bytes, seed

BATCH = 2


def any_array(rng: random.Random, batch: int, seg: int, high: int) -> Any:
    """Something passed where an array belongs: mostly near-valid numpy arrays, sometimes not arrays at all."""
    pick = rng.randrange(12)
    if pick == 0:
        return rng.choice([None, "3", 2.5, True, b"\x00", object(), [], [[1, 2], [3]], {"tokens": 1}, float("nan")])
    shape = tuple(rng.choice([0, 1, batch, seg, seg + 1, rng.randint(1, seg)]) for _ in range(rng.choice([0, 1, 2, 2, 2, 3])))
    dtype = rng.choice([np.int64, np.int64, np.int32, np.uint8, np.int8, np.float32, np.float64, np.float16, np.bool_, np.uint64])
    values = np.random.default_rng(rng.randrange(1 << 30)).integers(-2, high + 2, size=shape)
    arr = values.astype(dtype)
    if pick == 1 and arr.size and arr.dtype.kind == "f":
        arr.flat[0] = np.nan
    if pick == 2 and arr.size and arr.dtype == np.int64:
        arr.flat[0] = np.iinfo(np.int64).min
    if pick == 3 and arr.ndim >= 1 and arr.shape[-1] > 1:
        arr = arr[..., ::-1]  # a negative-stride view
    if pick == 4:
        return arr.tolist()
    return arr


def good_tokens(rng: random.Random, vocab: int, seg: int) -> np.ndarray:
    return np.random.default_rng(rng.randrange(1 << 30)).integers(0, vocab, size=(BATCH, rng.randint(1, seg)))


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def rt(request, package_of):
    if request.param == "torch":
        pytest.importorskip("torch")
    return runtimes.open(package_of("rmt-tiny"), backend=request.param)


def test_stream_calls_out_of_contract_are_typed_refusals_and_leave_the_state_unchanged(rt):
    m = rt.manifest
    vocab, seg = m.vocab_size, m.segment["max"]
    rng = random.Random(seed() * 31 + 1)
    tally = Tally(f"stream calls, {rt.describe()['backend']} (Python)")
    stream = rt.stream(BATCH)
    stream.step(good_tokens(rng, vocab, seg))
    for index in range(cases(750)):
        before = stream.snapshot()
        op = rng.randrange(10)
        if op < 6:
            tokens = good_tokens(rng, vocab, seg) if rng.random() < 0.4 else any_array(rng, BATCH, seg, vocab)
            n = np.shape(tokens)[1] if isinstance(tokens, np.ndarray) and tokens.ndim == 2 else seg
            lengths = None if rng.random() < 0.5 else any_array(rng, BATCH, seg, n)
            reset = None if rng.random() < 0.6 else any_array(rng, BATCH, seg, 1)
            call = lambda: stream.step(tokens, lengths, reset)  # noqa: E731
        elif op == 6:
            rows = rng.choice([None, [0], [1], [2], [-1], [0, 0], 0.5, "0", [True, False], np.array([True, True]), np.array([1.0]), [[0]], 10**20])
            call = lambda: stream.reset(rows)  # noqa: E731
        elif op == 7:
            blob = mutate_bytes(rng, before) if rng.random() < 0.8 else rng.choice([b"", "text", None, 3, bytearray(before)])
            call = lambda: stream.restore(blob)  # noqa: E731
        elif op == 8:
            size = rng.choice([0, -1, 1, 2, 2.5, "3", None, True, 10**12, np.int64(2), 65536, 65537])
            call = lambda: rt.stream(size)  # noqa: E731
        else:
            size = rng.choice([0, -1, 4, 2.5, "4", None, False, 10**12, np.int32(3)])
            call = lambda: rt.pool(size)  # noqa: E731
        verdict = tally.run(index, call)
        if verdict != "ok" and stream.snapshot() != before:
            tally.fail(index, f"a refused call ({verdict}) changed the stream's state")
    tally.check()


def test_pool_calls_out_of_contract_are_typed_refusals_and_leave_every_stream_unchanged(rt):
    m = rt.manifest
    vocab, seg = m.vocab_size, m.segment["max"]
    rng = random.Random(seed() * 31 + 2)
    tally = Tally(f"pool calls, {rt.describe()['backend']} (Python)")
    pool = rt.pool(4)
    ids = [pool.open() for _ in range(3)]
    pool.step({sid: np.arange(1 + sid % seg) % vocab for sid in ids})
    for index in range(cases(750)):
        before = {sid: pool.snapshot(sid) for sid in ids}
        op = rng.randrange(8)
        if op < 5:
            def segment() -> Any:
                if rng.random() < 0.5:
                    return np.random.default_rng(rng.randrange(1 << 30)).integers(0, vocab, size=rng.randint(1, seg))
                return any_array(rng, 1, seg, vocab)
            keys = rng.sample([*ids, 99, -1, "0", 1.0, None, np.int64(ids[0]), True], rng.randint(0, 4))
            arg: Any = {k: segment() for k in keys} if rng.random() < 0.9 else rng.choice([None, [], [(ids[0], [1, 2])], "x"])
            call = lambda: pool.step(arg)  # noqa: E731
        elif op == 5:
            sid = rng.choice([99, -1, "0", None, 2.5])
            call = lambda: pool.reset(sid)  # noqa: E731
        elif op == 6:
            sid = rng.choice([99, -1, "0", None, 2.5])
            call = lambda: pool.close(sid)  # noqa: E731
        else:
            sid = rng.choice([*ids, 99])
            blob = mutate_bytes(rng, before[ids[0]])
            call = lambda: pool.restore(sid, blob)  # noqa: E731
        verdict = tally.run(index, call)
        if verdict != "ok" and any(sid in before and pool.snapshot(sid) != before[sid] for sid in ids):
            tally.fail(index, f"a refused call ({verdict}) changed a stream's state")
    tally.check()
