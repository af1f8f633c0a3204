"""Regression tests for issue 17's boundary findings in the Python runtime: each is named after
what it got wrong. Every test runs on the ONNX Runtime and the torch backend and asks for the
same verdict from both."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from memx import runtimes
from memx.errors import DTypeError, InputError, ManifestError, StateError

BACKENDS = ("onnxruntime", "torch")


@pytest.fixture(scope="module")
def pkg(package_of):
    return package_of("rmt-tiny")


@pytest.fixture(scope="module")
def rts(pkg):
    return {b: runtimes.open(pkg, backend=b) for b in BACKENDS}


def _tokens(batch: int, seg: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 64, (batch, seg))


def _edited(src: Path, dst: Path, dtype: str, *, graph_too: bool) -> Path:
    """A copy whose memx.json gives the state ``dtype`` (and, ``graph_too``, its graph tensors as
    well), with the stored model_id dropped: a hand edit that the id check does not catch."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "memx.json").read_text())
    m.pop("model_id")
    for s in m["state"]:
        s["dtype"] = dtype
    if graph_too:
        for g in m["graphs"]:
            for t in g["inputs"] + g["outputs"]:
                if t["name"].startswith(("state_in.", "state_out.")):
                    t["dtype"] = dtype
    (dst / "memx.json").write_text(json.dumps(m))
    return dst


def _verdict(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the verdict is the type and the message
        return type(e), str(e)
    return None, "accepted"


@pytest.mark.parametrize("graph_too", [False, True], ids=["state-only", "state-and-graph-tensors"])
@pytest.mark.parametrize("dtype", ["float16", "int64"])
def test_the_torch_backend_refuses_a_state_dtype_that_onnxruntime_refuses_instead_of_giving_other_numbers(pkg, tmp_path, dtype, graph_too):
    edited = _edited(pkg.path, tmp_path / "edited.memx", dtype, graph_too=graph_too)

    def open_and_step(backend):
        s = runtimes.open(edited, backend=backend, verify=False).stream(2)
        s.step(_tokens(2))  # torch used to run this (and give other numbers); onnxruntime raised its own InvalidArgument

    verdicts = {b: _verdict(lambda b=b: open_and_step(b)) for b in BACKENDS}
    assert verdicts["onnxruntime"] == verdicts["torch"], verdicts
    kind, text = verdicts["torch"]
    assert kind is ManifestError
    if graph_too:  # memx.json agrees with itself; the graph (ONNX or the torch model) takes float32
        assert f"graph 'step' input 'state_in.memory' has another dtype than memx.json declares: expected {dtype}, got float32" in text
    else:  # the state is fed as memx.json's state says; its graph input says float32
        assert f"state 'memory' has another dtype than graph 'step' input 'state_in.memory' in memx.json: expected float32, got {dtype}" in text


@pytest.mark.parametrize("dtype", ["float16", "int64"])
def test_a_state_of_another_dtype_given_to_run_step_is_refused_alike_by_every_backend(rts, dtype):
    verdicts = {}
    for b, rt in rts.items():
        state = {k: v.astype(dtype) for k, v in rt.fresh_state(2).states.items()}
        tok = _tokens(2)
        verdicts[b] = _verdict(lambda rt=rt, state=state, tok=tok: rt.run_step(tok, np.full(2, 6), np.ones(2, dtype=bool), state))
    assert verdicts["onnxruntime"] == verdicts["torch"] == (StateError, f"state 'memory' has the wrong dtype: expected float32, got {dtype}")


def _strided_cases(batch: int):
    tok = _tokens(batch)
    two = np.concatenate([tok, _tokens(batch, seed=1)])
    lengths = np.arange(3, 3 + batch)
    reset = np.arange(batch) % 2 == 0
    return {
        "lengths-reversed": (tok, lengths[::-1], None),  # np.array([3, 5])[::-1]; for batch 1 a view numpy calls contiguous
        "lengths-every-other": (tok, np.repeat(lengths, 2)[::2], None),
        "reset-reversed": (tok, None, reset[::-1]),
        "tokens-rows-reversed": (tok[::-1], None, None),
        "tokens-every-other-row-reversed": (two[::-2][:batch], None, None),
        "tokens-columns-reversed": (tok[:, ::-1], None, None),
        "tokens-fortran-order": (np.asfortranarray(tok), None, None),
        "tokens-read-only": (np.lib.stride_tricks.as_strided(tok, writeable=False), None, None),
        "all-three": (tok[::-1], lengths[::-1], reset[::-1]),
    }


@pytest.mark.parametrize("resident", [False, True], ids=["host", "resident"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_negative_stride_and_non_contiguous_inputs_are_accepted_with_the_numbers_of_a_contiguous_copy(rts, backend, resident, batch):
    rt = rts[backend]
    for name, (tok, lengths, reset) in _strided_cases(batch).items():
        got = rt.stream(batch, resident=resident).step(tok, lengths, reset)
        want = rt.stream(batch, resident=resident).step(*(None if a is None else np.array(a, copy=True, order="C") for a in (tok, lengths, reset)))
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{backend} {name}")


class _Pairs(Mapping):
    """A Mapping whose items() may repeat a key, like multidict.MultiDict."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __getitem__(self, key):
        return next(v for k, v in self.pairs if k == key)

    def __iter__(self):
        return (k for k, _ in self.pairs)

    def __len__(self):
        return len(self.pairs)

    def items(self):
        return list(self.pairs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mapping_that_names_the_same_pool_stream_twice_is_refused_not_run_for_its_last_segment_only(rts, backend):
    pool = rts[backend].pool()
    a, b = pool.open(), pool.open()
    pool.step({a: _tokens(1)[0], b: _tokens(1, seed=2)[0]})
    before = {sid: (pool.state(sid), pool.snapshot(sid)) for sid in (a, b)}
    for first, second in [(b, np.int64(b)), (np.int64(b), b), (b, b)]:
        given = _Pairs([(a, _tokens(1)[0]), (first, _tokens(1, seed=3)[0]), (second, _tokens(1, seed=4)[0])])
        with pytest.raises(InputError, match=re.escape(f"stream {b} is given twice in one pool.step: expected each stream at most once per step, got keys {first!r} and {second!r}")):
            pool.step(given)
        for sid in (a, b):  # nothing ran: no stream's state or depth changed
            assert pool.snapshot(sid) == before[sid][1]
            assert all(np.array_equal(v, before[sid][0][k]) for k, v in pool.state(sid).items())


@pytest.mark.parametrize("key", [True, 1.0, np.float64(1), "1", None], ids=["bool", "float", "numpy-float", "str", "None"])
def test_pool_stream_ids_that_only_compare_equal_to_an_id_are_refused_not_taken_for_that_stream(rts, key):
    pool = rts["onnxruntime"].pool()
    pool.open()
    sid = pool.open()
    assert sid == 1
    before = pool.snapshot(sid)
    with pytest.raises(DTypeError, match=r"a stream id must be an integer: expected an int that pool.open\(\) returned, got"):
        pool.step({key: _tokens(1)[0]})  # True, 1.0 used to step stream 1
    for method in (pool.state, pool.snapshot, pool.reset, pool.close):
        with pytest.raises(DTypeError, match="a stream id must be an integer"):
            method(key)
    assert pool.snapshot(sid) == before and len(pool) == 2
    out = pool.step({np.int64(sid): _tokens(1)[0]})  # numpy integers are ids
    assert list(out) == [1] and type(next(iter(out))) is int
