"""Device-resident streams (memx.runtimes.resident) of the onnxruntime and torch backends.

On this CPU the buffers are host OrtValues / torch tensors; the code is the one that keeps the
memory in CUDA memory on a GPU (tests/runtimes/test_cuda.py runs it there). The API-level
contract (bad input, snapshots, reset rows, failures) runs in test_streams.py for both."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from memx import runtimes
from memx.errors import BackendUnavailableError, InputError
from memx.runtimes.resident import ResidentStream
from memx.zoo import get_zoo, zoo_entries

ZOO = [e.name for e in zoo_entries()]
RESIDENT_BACKENDS = ["onnxruntime", "torch"]


def _segments(rng, vocab, seg_max, batch, n):
    """n ragged segments: (tokens (B, S), lengths (B,)), some rows shorter than S, some empty."""
    for _ in range(n):
        s = int(rng.integers(1, seg_max + 1))
        yield rng.integers(0, vocab, size=(batch, s)), rng.integers(0, s + 1, size=batch)


@pytest.mark.parametrize("backend", RESIDENT_BACKENDS)
@pytest.mark.parametrize("name", ZOO)
def test_resident_stream_matches_host_stream_over_256_segments(name, backend, package_of):
    """Outputs every step and the final state, with resets mid-stream: the same as the host-state
    stream, and the snapshots of both are the same bytes."""
    pkg = package_of(name)
    rt = runtimes.open(pkg, backend=backend)
    host, resident = rt.stream(2, resident=False), rt.stream(2, resident=True)
    assert isinstance(resident, ResidentStream) and not isinstance(host, ResidentStream)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    m = pkg.manifest
    for i, (x, lens) in enumerate(_segments(rng, m.vocab_size, get_zoo(name).segment_len, 2, 256)):
        reset = np.array([i == 100, i == 170])
        want, got = host.step(x, lens, reset), resident.step(x, lens, reset)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-6, err_msg=f"{k} at segment {i}")
    for k, v in host.state.items():
        np.testing.assert_allclose(resident.state[k], v, atol=1e-6, err_msg=f"state {k}")
    assert resident.segments == host.segments == 256
    assert resident.snapshot() == host.snapshot()


class CountingDevice:
    """Wraps a device and records what crosses between host and device."""

    def __init__(self, inner):
        self.inner, self.uploads, self.downloads = inner, [], []
        self.graphs_supported = inner.graphs_supported
        self.waits = {"finish_step": 0, "synchronize": 0, "all_finite": 0}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upload(self, buf, host):
        self.uploads.append(self.inner.address(buf))
        self.inner.upload(buf, host)

    def download(self, buf):
        self.downloads.append(self.inner.address(buf))
        return self.inner.download(buf)

    def finish_step(self, outputs, states):
        self.waits["finish_step"] += 1
        self.downloads += [self.inner.address(b) for b in outputs]
        return self.inner.finish_step(outputs, states)

    def synchronize(self):
        self.waits["synchronize"] += 1
        self.inner.synchronize()

    def all_finite(self, buf):
        self.waits["all_finite"] += 1
        return self.inner.all_finite(buf)

    def all_finite_many(self, bufs):
        self.waits["all_finite"] += 1
        return self.inner.all_finite_many(bufs)


@pytest.mark.parametrize("backend", RESIDENT_BACKENDS)
def test_steps_move_only_tokens_and_outputs_and_never_bind_a_buffer_both_ways(backend, package_of):
    pkg = package_of("memformer-tiny")  # two state tensors
    rt = runtimes.open(pkg, backend=backend)
    executor, device = rt.backend.resident()
    counting = CountingDevice(device)
    s = ResidentStream(pkg, executor, counting, 2)
    state_buffers = {counting.address(b) for b in list(s.buffers.a.values()) + list(s.buffers.b.values())}
    assert len(state_buffers) == 2 * len(pkg.manifest.state)
    bound = []
    real_bind = executor.bind

    def recording_bind(binding, handle):
        bound.append([(counting.address(binding.inputs[t.input]), counting.address(binding.outputs[t.output])) for t in pkg.manifest.state])
        real_bind(binding, handle)

    executor.bind = recording_bind
    rng = np.random.default_rng(0)
    for x, lens in _segments(rng, pkg.manifest.vocab_size, 16, 2, 6):
        s.step(x, lens)
    assert not state_buffers & set(counting.uploads), "a step uploaded state"
    assert not state_buffers & set(counting.downloads), "a step downloaded state"
    assert len(counting.uploads) == 3 * 6  # tokens, lengths, reset
    for pairs in bound:
        assert all(i != o for i, o in pairs)
    assert bound[0] == bound[2] == bound[4] and bound[1] == bound[3] == bound[5] and bound[0] != bound[1]  # two sets, swapped each step


@pytest.mark.parametrize("backend", RESIDENT_BACKENDS)
def test_a_step_waits_for_the_device_once(backend, package_of):
    """Outputs and the finiteness of every new state come back in one finish_step: no other
    synchronize, download or finiteness call of the store's own during steps."""
    pkg = package_of("memformer-tiny")  # two graphs, two state tensors
    rt = runtimes.open(pkg, backend=backend)
    executor, device = rt.backend.resident()
    counting = CountingDevice(device)
    s = ResidentStream(pkg, executor, counting, 2)
    rng = np.random.default_rng(1)
    for x, lens in _segments(rng, pkg.manifest.vocab_size, 16, 2, 5):
        s.step(x, lens)
    assert counting.waits == {"finish_step": 5, "synchronize": 0, "all_finite": 0}
    assert len(counting.downloads) == 5 * len(pkg.manifest.outputs)


@pytest.mark.parametrize("backend", RESIDENT_BACKENDS)
def test_a_resident_pool_keeps_state_on_the_device_grows_and_equals_the_host_pool(backend, package_of):
    """Streams join (the slot buffers grow from 2 rows), step in ragged random subsets in chunks
    of 3 and restart: outputs and states equal the host pool's, and during steps only tokens,
    lengths and reset go up and only outputs come down."""
    from memx.runtimes.pool import StreamPool
    from memx.runtimes.resident import DeviceSlots

    pkg = package_of("memformer-tiny")  # two graphs, two state tensors
    rt = runtimes.open(pkg, backend=backend)
    executor, device = rt.backend.resident()
    counting = CountingDevice(device)
    slots = DeviceSlots(pkg, executor, counting, capacity=2)
    pool, host = StreamPool(rt, 3, slots), rt.pool(max_batch=3, resident=False)
    ids = [(pool.open(), host.open()) for _ in range(7)]
    assert slots.capacity == 8
    rng = np.random.default_rng(4)
    m = pkg.manifest
    counting.uploads.clear(), counting.downloads.clear()
    chunks = 0
    for step in range(30):
        if step == 12:
            pool.reset(ids[2][0]), host.reset(ids[2][1])
        chosen = [pair for pair in ids if rng.random() < 0.7]
        feeds = [(pair, rng.integers(0, m.vocab_size, size=int(rng.integers(1, m.segment["max"] + 1)))) for pair in chosen]
        got = pool.step({p: x for (p, _), x in feeds})
        want = host.step({h: x for (_, h), x in feeds})
        chunks += -(-len(feeds) // 3)
        for (p, h), _ in feeds:
            for k in want[h]:
                np.testing.assert_allclose(got[p][k], want[h][k], atol=1e-5, err_msg=f"{k} at step {step}")
    assert len(counting.uploads) == 3 * chunks  # tokens, lengths, reset per chunk: never a state
    assert len(counting.downloads) == len(m.outputs) * chunks  # the outputs of each chunk: never a state
    for p, h in ids:
        for k, v in host.state(h).items():
            np.testing.assert_allclose(pool.state(p)[k], v, atol=1e-5, err_msg=f"state {k}")
    assert pool.snapshot(ids[0][0]) == host.snapshot(ids[0][1])


def test_cuda_graphs_and_resident_choices_are_checked(package_of):
    pkg = package_of("rmt-tiny")
    with pytest.raises(BackendUnavailableError, match="CUDA graphs") as e:
        runtimes.open(pkg, backend="torch").stream(cuda_graphs=True)
    assert e.value.expected and e.value.actual == "cpu"
    with pytest.raises(BackendUnavailableError, match="CUDA graphs"):
        runtimes.open(pkg, backend="onnxruntime", resident=True, cuda_graphs=True).stream()
    with pytest.raises(InputError, match="resident") as e:
        runtimes.open(pkg, backend="torch").stream(resident=False, cuda_graphs=True)
    assert e.value.actual == "resident=False"
    assert not isinstance(runtimes.open(pkg, backend="onnxruntime").stream(), ResidentStream)  # CPU default: host state
    assert isinstance(runtimes.open(pkg, backend="onnxruntime", resident=True).stream(), ResidentStream)
    with pytest.raises(InputError, match="batch_size"):
        runtimes.open(pkg, backend="onnxruntime").stream(0, resident=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_onnxruntime_device_buffers_start_at_zero_and_the_device_side_check_finds_non_finite(dtype):
    """OrtValues are allocated uninitialised: buffers must be zeroed. The finiteness check that
    runs where the state lives (a graph on the same providers) agrees with numpy."""
    from memx.runtimes.resident import OrtDevice

    device = OrtDevice("cpu", device_check=True)
    for _ in range(10):
        buf = device.empty((16, 33), dtype)
        assert not device.download(buf).any() and device.all_finite(buf)
    big = 65000.0 if dtype == "float16" else 3e38  # large but finite
    for value, finite in [(big, True), (-big, True), (np.inf, False), (-np.inf, False), (np.nan, False)]:
        host = np.zeros((16, 33), dtype=dtype)
        host[15, 32] = value
        device.upload(buf, host)
        assert device.all_finite(buf) is finite, value
    assert device.all_finite(device.empty((4,), "int64"))


def test_nan_state_is_caught_on_the_device_and_leaves_the_stream_unchanged(package_of):
    from memx.errors import NonFiniteStateError
    from memx.runtimes.resident import OrtDevice

    pkg = package_of("rmt-tiny")
    executor, _ = runtimes.open(pkg, backend="onnxruntime").backend.resident()
    device = OrtDevice("cpu", device_check=True)
    s = ResidentStream(pkg, executor, device, 2)
    rng = np.random.default_rng(3)
    for x, lens in _segments(rng, 64, 32, 2, 3):
        s.step(x, lens)
    before, parity = s.snapshot(), s.buffers.parity
    real = executor.launch

    def poisoned(handle):
        real(handle)
        state = s.buffers.writes()["memory"]
        host = device.download(state)
        host[1, 0, 0] = np.nan
        device.upload(state, host)

    executor.launch = poisoned
    with pytest.raises(NonFiniteStateError, match=r"rows \[1\]"):
        s.step(*next(_segments(rng, 64, 32, 2, 1)))
    assert s.snapshot() == before and s.buffers.parity == parity and s.segments == 3


@pytest.mark.parametrize("backend", RESIDENT_BACKENDS)
def test_a_nan_in_one_of_many_states_is_named_and_leaves_every_state_unchanged(backend, package_of, monkeypatch):
    """kvcache-tiny has five states: the fused device check (torch) or the per-buffer one (ORT)
    names the one that went non-finite, and no state, parity or count moves."""
    from memx.errors import NonFiniteStateError

    pkg = package_of("kvcache-tiny")
    s = runtimes.open(pkg, backend=backend, resident=True).stream(2)
    rng = np.random.default_rng(4)
    for _ in range(3):
        s.step(rng.integers(0, pkg.manifest.vocab_size, (2, 8)))
    before, parity, count = s.snapshot(), s.buffers.parity, s.segments
    real_launch = s.executor.launch

    def poisoned(handle):
        real_launch(handle)
        bad = s.buffers.writes()["v1"]
        s.device.upload(bad, np.full(s.schema["v1"][0], np.inf, dtype=np.float32)[None].repeat(2, axis=0))

    monkeypatch.setattr(s.executor, "launch", poisoned)
    with pytest.raises(NonFiniteStateError, match="'v1'"):
        s.step(rng.integers(0, pkg.manifest.vocab_size, (2, 8)))
    assert s.snapshot() == before and s.buffers.parity == parity and s.segments == count
