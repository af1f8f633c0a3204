"""Runtime API: validation, transactional steps, snapshots, pools. Run for every backend."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from memx import runtimes
from memx.errors import (
    BackendRunError,
    BackendUnavailableError,
    BatchMismatchError,
    DTypeError,
    InputError,
    NonFiniteStateError,
    RankError,
    RegistryError,
    SegmentLengthError,
    SnapshotCorruptError,
    SnapshotMismatchError,
    TokenRangeError,
)
from memx.package import snapshot as snap

BACKENDS = runtimes.backends()
# the same tests for streams whose state stays in device buffers (memx.runtimes.resident); on the
# CPU the buffers are host OrtValues / torch tensors, on a GPU the same code keeps them in CUDA memory
RESIDENT = ["onnxruntime/resident", "torch/resident"]
V, S_MAX = 64, 32  # tiny presets


def _tokens(rng, b, s):
    return rng.integers(0, V, size=(b, s))


def _advance(stream, rng, n=3, b=2):
    for _ in range(n):
        stream.step(_tokens(rng, b, 10), lengths=rng.integers(1, 11, size=b))


def _open(pkg, backend, tmp_path):
    """runtimes.open; the tensorrt backend first needs engines, a GPU and TensorRT (else skip)."""
    if backend.endswith("/resident"):
        return runtimes.open(pkg, backend=backend.split("/")[0], resident=True)
    if backend == "tensorrt":
        import importlib.util
        import shutil

        import torch

        if importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available():
            pytest.skip("the tensorrt backend needs TensorRT and a CUDA GPU")
        from memx.tensorrt import build_engines

        dst = tmp_path / pkg.path.name
        shutil.copytree(pkg.path, dst)
        build_engines(dst, batch="1,2,8")
        return runtimes.open(dst, backend="tensorrt", device="cuda")
    return runtimes.open(pkg, backend=backend)


@pytest.fixture(params=BACKENDS + RESIDENT)
def rt(request, package_of, tmp_path):
    return _open(package_of("rmt-tiny"), request.param, tmp_path)


BAD_INPUTS = [
    (lambda r: dict(tokens=_tokens(r, 2, 8).astype(np.float32)), DTypeError, "int64"),
    (lambda r: dict(tokens=_tokens(r, 2, 8)[None]), RankError, "rank 2"),
    (lambda r: dict(tokens=_tokens(r, 3, 8)), BatchMismatchError, "expected 2, got 3"),
    (lambda r: dict(tokens=_tokens(r, 2, S_MAX + 1)), SegmentLengthError, f"expected 1..{S_MAX} tokens, got {S_MAX + 1}"),
    (lambda r: dict(tokens=np.full((2, 8), V)), TokenRangeError, f"expected 0..{V - 1}, got {V}"),
    (lambda r: dict(tokens=np.full((2, 8), -1)), TokenRangeError, "got -1"),
    (lambda r: dict(tokens=_tokens(r, 2, 8), lengths=np.array([9, 1])), InputError, "lengths out of range"),
    (lambda r: dict(tokens=_tokens(r, 2, 8), lengths=np.array([1.0, 2.0])), DTypeError, "lengths must be integers"),
    (lambda r: dict(tokens=_tokens(r, 2, 8), reset=np.array([1, 0])), DTypeError, "reset must be boolean"),
    (lambda r: dict(tokens=_tokens(r, 2, 8), reset=np.array([True])), BatchMismatchError, "one entry per row"),
]


@pytest.mark.parametrize("make, error, message", BAD_INPUTS)
def test_bad_input_raises_typed_error_and_leaves_state_unchanged(rt, make, error, message):
    rng = np.random.default_rng(0)
    s, twin = rt.stream(2), rt.stream(2)
    _advance(s, np.random.default_rng(1))
    _advance(twin, np.random.default_rng(1))
    before = s.state
    with pytest.raises(error) as e:
        s.step(**make(rng))
    assert message in str(e.value)
    assert e.value.expected is not None and e.value.actual is not None
    for k in before:
        np.testing.assert_array_equal(s.state[k], before[k])
    assert s.segments == twin.segments
    x = _tokens(rng, 2, 12)
    np.testing.assert_array_equal(s.step(x)["logits"], twin.step(x)["logits"])


def test_backend_failure_and_nan_state_leave_state_unchanged(rt, monkeypatch):
    s = rt.stream(2)
    _advance(s, np.random.default_rng(2))
    before = s.state
    if isinstance(s, runtimes.ResidentStream):  # the graphs run through the stream's executor on device buffers
        real_launch = s.executor.launch

        def nan_launch(handle):
            real_launch(handle)
            s.device.upload(s.buffers.writes()["memory"], np.full(before["memory"].shape, np.nan, dtype=np.float32))

        monkeypatch.setattr(s.executor, "launch", nan_launch)
        with pytest.raises(NonFiniteStateError, match="state left unchanged"):
            s.step(_tokens(np.random.default_rng(3), 2, 5))
        monkeypatch.setattr(s.executor, "launch", lambda handle: 1 / 0)
    else:
        real_run = rt.backend.run

        def nan_run(graph, feeds):
            out = real_run(graph, feeds)
            out["state_out.memory"] = np.full_like(out["state_out.memory"], np.nan)
            return out

        monkeypatch.setattr(rt.backend, "run", nan_run)
        with pytest.raises(NonFiniteStateError, match="state left unchanged"):
            s.step(_tokens(np.random.default_rng(3), 2, 5))
        monkeypatch.setattr(rt.backend, "run", lambda graph, feeds: 1 / 0)
    with pytest.raises(BackendRunError, match="ZeroDivisionError"):
        s.step(_tokens(np.random.default_rng(3), 2, 5))
    for k in before:
        np.testing.assert_array_equal(s.state[k], before[k])
    assert s.segments == 3


def test_one_dimensional_tokens_for_a_single_stream(rt):
    s = rt.stream()
    out = s.step(np.arange(10) % V)
    assert out["logits"].shape == (10, V)
    assert s.step(np.arange(10)[None] % V)["logits"].shape == (1, 10, V)


def test_snapshot_restore_continues_exactly(rt):
    rng = np.random.default_rng(4)
    a = rt.stream(2)
    _advance(a, rng, n=5)
    blob = a.snapshot()
    b = rt.stream(2)
    b.restore(blob)
    assert b.segments == a.segments
    for _ in range(20):
        x, lens = _tokens(rng, 2, 16), rng.integers(0, 17, size=2)
        oa, ob = a.step(x, lens), b.step(x, lens)
        np.testing.assert_array_equal(oa["logits"], ob["logits"])
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k])


def test_snapshot_of_a_fresh_stream_still_resets(rt):
    fresh = rt.stream()
    blob = fresh.snapshot()
    restored = rt.stream()
    restored.reset()  # a used stream with garbage, whatever its state store
    restored._store.replace({"memory": np.full(restored.state["memory"].shape, 5.0, dtype=np.float32)})
    restored.pending[:] = False
    restored.restore(blob)
    x = np.arange(8) % V
    np.testing.assert_array_equal(restored.step(x)["logits"], rt.stream().step(x)["logits"])


def test_snapshots_move_between_backends(package_of):
    pkg = package_of("rmt-tiny")
    rng = np.random.default_rng(5)
    t = runtimes.open(pkg, backend="torch").stream(2)
    _advance(t, rng, n=4)
    o = runtimes.open(pkg, backend="onnxruntime").stream(2)
    o.restore(t.snapshot())
    x = _tokens(rng, 2, 20)
    np.testing.assert_allclose(t.step(x)["logits"], o.step(x)["logits"], atol=1e-5)


def _corrupt(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    "mangle, error, message",
    [
        (_corrupt, SnapshotCorruptError, "checksum mismatch"),
        (lambda b: b[: len(b) - 10], SnapshotCorruptError, "checksum mismatch"),
        (lambda b: b[:5], SnapshotCorruptError, "not a memx snapshot"),
        (lambda b: b"PK\x03\x04" + bytes(100), SnapshotCorruptError, "not a memx snapshot"),
        (lambda b: "text", SnapshotCorruptError, "must be bytes"),
    ],
)
def test_bad_snapshot_bytes_are_refused_and_state_kept(rt, mangle, error, message):
    s = rt.stream(2)
    _advance(s, np.random.default_rng(6))
    blob, before = s.snapshot(), s.state
    with pytest.raises(error, match=message):
        s.restore(mangle(blob))
    for k in before:
        np.testing.assert_array_equal(s.state[k], before[k])


def test_foreign_snapshots_are_refused(rt, package_of):
    other = runtimes.open(package_of("memtr-tiny"), backend="onnxruntime").stream(2)
    s = rt.stream(2)
    with pytest.raises(SnapshotMismatchError, match="another model"):
        s.restore(other.snapshot())
    with pytest.raises(SnapshotMismatchError, match="batch size"):
        s.restore(rt.stream(3).snapshot())
    data = snap.decode(s.snapshot())
    data.states["memory"] = data.states["memory"][:, :2]
    with pytest.raises(SnapshotMismatchError, match="wrong layout"):
        s.restore(snap.encode(data))
    data = snap.decode(s.snapshot())
    blob = snap.encode(data)
    future = blob[:8] + (2).to_bytes(2, "little") + blob[10:-32]
    with pytest.raises(SnapshotMismatchError, match="version"):
        s.restore(future + hashlib.sha256(future).digest())


def test_nan_in_a_restored_state_is_refused(rt):
    s = rt.stream(2)
    _advance(s, np.random.default_rng(7))
    before = s.state
    data = snap.decode(s.snapshot())
    data.states["memory"][1, 2, 3] = np.inf
    with pytest.raises(NonFiniteStateError, match=r"index \[1, 2, 3\]"):
        s.restore(snap.encode(data))
    np.testing.assert_array_equal(s.state["memory"], before["memory"])


def test_reset_rows_restarts_them(rt):
    rng = np.random.default_rng(8)
    s = rt.stream(2)
    _advance(s, rng, n=4)
    s.reset(rows=[1])
    x = _tokens(rng, 2, 9)
    out = s.step(x)
    fresh = rt.stream(1).step(x[1:])
    np.testing.assert_allclose(out["logits"][1], fresh["logits"][0], atol=1e-5)
    with pytest.raises(InputError, match="reset row out of range"):
        s.reset(rows=[2])


def test_pool_equals_streams_run_alone(rt):
    """A batch mixing new and running streams, ragged segments, chunked calls: row by row
    the same as each stream alone, outputs and states, over many steps."""
    rng = np.random.default_rng(9)
    pool = rt.pool(max_batch=3)
    alone: dict[int, runtimes.Stream] = {}
    for step in range(40):
        if step in (0, 5, 11, 20):  # streams join while others run
            for _ in range(2 if step == 0 else 1):
                sid = pool.open()
                alone[sid] = rt.stream()
        if step == 25:  # one stream restarts mid-way
            victim = sorted(alone)[1]
            pool.reset(victim)
            alone[victim].reset()
        feeds = {sid: rng.integers(0, V, size=int(rng.integers(1, S_MAX + 1))) for sid in alone if rng.random() < 0.85}
        got = pool.step(feeds)
        for sid, tokens in feeds.items():
            want = alone[sid].step(tokens)
            np.testing.assert_allclose(got[sid]["logits"], want["logits"], atol=1e-5)
            np.testing.assert_allclose(pool.state(sid)["memory"], alone[sid].state["memory"], atol=1e-5)
    assert len(pool) == 5


def test_pool_step_is_all_or_nothing(rt):
    pool = rt.pool(max_batch=2)
    a, b, c = pool.open(), pool.open(), pool.open()
    pool.step({a: np.arange(5), b: np.arange(7), c: np.arange(3)})
    before = {sid: pool.state(sid) for sid in (a, b, c)}
    with pytest.raises(TokenRangeError):
        pool.step({a: np.arange(5), b: np.arange(7), c: np.array([1, V + 3])})
    for sid in (a, b, c):
        np.testing.assert_array_equal(pool.state(sid)["memory"], before[sid]["memory"])
    with pytest.raises(InputError, match="unknown stream id"):
        pool.step({99: np.arange(3)})
    pool.close(a)
    assert a not in pool and len(pool) == 2


def test_pool_step_rows_equals_a_stream_of_the_same_rows(rt):
    """The batched pool entry (one array of many streams' rows, chunked by max_batch): every
    output and state equal a local Stream(5)'s over 200 steps with ragged lengths and row
    resets; all or nothing on a bad row; a stream given twice is refused."""
    rng = np.random.default_rng(12)
    pool = rt.pool(max_batch=2)
    sids = [pool.open() for _ in range(5)]
    local = rt.stream(5)
    for _ in range(200):
        width = int(rng.integers(1, S_MAX + 1))
        tokens, lengths, reset = rng.integers(0, V, (5, width)), rng.integers(0, width + 1, 5), rng.random(5) < 0.05
        got, want = pool.step_rows(sids, tokens, lengths, reset), local.step(tokens, lengths, reset)
        np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-5)
    for b, sid in enumerate(sids):
        np.testing.assert_allclose(pool.state(sid)["memory"], local.state["memory"][b : b + 1], atol=1e-5)
    before = [pool.snapshot(sid) for sid in sids]
    bad = rng.integers(0, V, (5, 4))
    bad[4, 1] = V + 3  # a bad row in the last chunk: no stream changes
    with pytest.raises(TokenRangeError):
        pool.step_rows(sids, bad)
    assert [pool.snapshot(sid) for sid in sids] == before
    with pytest.raises(InputError, match="given twice"):
        pool.step_rows([sids[0], sids[0]], bad[:2] % V)


def test_pool_snapshots_interoperate_with_streams(rt):
    rng = np.random.default_rng(10)
    s = rt.stream()
    for _ in range(3):
        s.step(rng.integers(0, V, size=12))
    pool = rt.pool()
    sid = pool.open()
    pool.restore(sid, s.snapshot())
    x = rng.integers(0, V, size=12)
    np.testing.assert_allclose(pool.step({sid: x})[sid]["logits"], s.step(x)["logits"], atol=1e-6)
    s2 = rt.stream()
    s2.restore(pool.snapshot(sid))
    np.testing.assert_allclose(s2.state["memory"], s.state["memory"], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS + RESIDENT)
def test_stateless_package(backend, package_of, tmp_path):
    r = _open(package_of("memtr-static-tiny"), backend, tmp_path)
    s = r.stream(2)
    x = np.random.default_rng(11).integers(0, V, size=(2, 6))
    a = s.step(x)["logits"]
    b = s.step(x)["logits"]
    np.testing.assert_array_equal(a, b)  # no memory: the same input gives the same output
    assert s.state == {}
    s.restore(s.snapshot())


def test_unknown_backend_and_unavailable_device(package_of):
    with pytest.raises(RegistryError, match="onnxruntime"):
        runtimes.open(package_of("rmt-tiny"), backend="tensorflow")
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing unavailable to test")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        runtimes.open(package_of("rmt-tiny"), backend="onnxruntime", device="cuda")


def test_onnxruntime_deployment_needs_no_torch(package_of):
    """A device with only ONNX Runtime: importing memx.runtimes and stepping must not import torch."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now fails
        "import numpy as np, memx.runtimes as r\n"
        f"s = r.open({str(package_of('rmt-tiny').path)!r}).stream()\n"
        "print(s.step(np.arange(5))['logits'].shape)\n"
        "try:\n    r.open(" + repr(str(package_of('rmt-tiny').path)) + ", backend='torch')\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
        "print('onnx' in sys.modules)\n"  # nor onnx's Python package (1.7 s of import): the runtime reads the manifest
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(5,", "64)", "BackendUnavailableError", "False"]
