"""The TensorRT runtime's bookkeeping, without a GPU: a host stand-in for the device and a fake
execution context that follows TensorRT's API (set_optimization_profile_async, set_input_shape,
set_tensor_address, execute_async_v3) and computes a toy step from the bound addresses."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from memx.errors import EngineCompatibilityError, NonFiniteStateError, SnapshotMismatchError, TokenRangeError
from memx.runtimes.resident import concrete_shape
from memx.runtimes.tensorrt_engine import GraphCache, GraphEngine, PingPong, ShapePlan, TensorRTStream
from memx.tensorrt.tags import BuildTags, Profile


class HostDevice:
    """Buffers are numpy arrays; addresses index a registry; 'graphs' are recorded launches."""

    def __init__(self):
        self.by_address: dict[int, np.ndarray] = {}
        self.replays = 0

    def empty(self, shape, dtype):
        arr = np.zeros(shape, dtype=np.dtype("bool" if dtype == "bool" else dtype))
        self.by_address[id(arr)] = arr
        return arr

    def address(self, buf):
        return id(buf)

    def upload(self, buf, host):
        buf[...] = host

    def download(self, buf):
        return buf.copy()

    def all_finite(self, buf):
        return buf.dtype.kind != "f" or bool(np.isfinite(buf).all())

    def all_finite_many(self, bufs):
        return all(self.all_finite(b) for b in bufs)

    def finish_step(self, outputs, states):
        return [o.copy() for o in outputs], self.all_finite_many(states)

    graphs_supported = True

    stream_handle = 7

    def synchronize(self):
        pass

    def capture(self, launch):
        return launch

    def replay(self, graph):
        self.replays += 1
        graph()


class FakeContext:
    """Toy step: state_out = (reset ? 0 : state_in) + mean(real tokens); logits = state sum."""

    def __init__(self, device, state_in, state_out, logits):
        self.device, self.names = device, (state_in, state_out, logits)
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        self.calls: list[str] = []
        self.profile = None
        self.poison = False

    def set_optimization_profile_async(self, index, stream):
        assert stream == HostDevice.stream_handle
        self.profile = index
        self.calls.append(f"profile {index}")

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        self.calls.append(f"shape {name}")
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        state_in, state_out, logits = self.names
        buf = lambda n: self.device.by_address[self.addresses[n]]  # noqa: E731
        assert self.addresses[state_in] != self.addresses[state_out], "one buffer bound as input and output"
        tokens, lengths, reset = buf("tokens"), buf("lengths"), buf("reset")
        mask = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
        mean = (tokens * mask).sum(1) / np.maximum(lengths, 1)
        prev = np.where(reset[:, None, None], 0.0, buf(state_in))
        new = prev + mean[:, None, None]
        if self.poison:
            new[0, 0, 0] = np.nan
        buf(state_out)[...] = new
        buf(logits)[...] = new.sum(axis=(1, 2))[:, None, None]
        self.calls.append("execute")
        return True


def _stream(pkg, batch=2, cuda_graphs=False, profiles=None):
    m = pkg.manifest
    device = HostDevice()
    s = m.state[0]
    profiles = profiles or [Profile({}, (1, 2, 4), (1, 8, 16)), Profile({}, (1, 2, 4), (17, 32, 32))]
    tags = BuildTags("step", "engines/step.plan", "tensorrt", "10.8.0", "sm90", "fp32", True, False, profiles)
    ctx = FakeContext(device, s.input, s.output, m.outputs[0].name)
    stream = TensorRTStream(pkg, [GraphEngine(m.graphs[0], tags, ctx, ShapePlan(profiles))], device, batch, cuda_graphs=cuda_graphs)
    return stream, ctx, device


def _tokens(rng, vocab, batch, seg):
    return rng.integers(0, vocab, size=(batch, seg))


def test_ping_pong_never_binds_one_buffer_both_ways_and_alternates(package_of):
    pkg = package_of("rmt-tiny")
    stream, ctx, _ = _stream(pkg)
    s = pkg.manifest.state[0]
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(6):
        stream.step(_tokens(rng, pkg.manifest.vocab_size, 2, 8))
        seen.append((ctx.addresses[s.input], ctx.addresses[s.output]))
    assert all(i != o for i, o in seen)
    assert seen[0] == seen[2] == seen[4] and seen[1] == seen[3] and seen[0] == seen[1][::-1]  # two buffers, swapped each step


def test_state_carries_over_steps_like_the_toy_model(package_of):
    pkg = package_of("rmt-tiny")
    stream, _, _ = _stream(pkg)
    ids = np.full((2, 4), 3)
    stream.step(ids)
    stream.step(ids, lengths=np.array([4, 2]))
    out = stream.step(ids, reset=np.array([False, True]))
    state = stream.state[pkg.manifest.state[0].name]
    assert np.allclose(state[0], 9.0) and np.allclose(state[1], 3.0)  # row 1 restarted on the third step
    assert out[pkg.manifest.outputs[0].name].shape[0] == 2


def test_shapes_and_profiles_are_set_only_when_the_call_changes(package_of):
    pkg = package_of("rmt-tiny")
    stream, ctx, _ = _stream(pkg)
    rng = np.random.default_rng(1)
    for seg in (8, 8, 8, 20, 20, 8):
        stream.step(_tokens(rng, pkg.manifest.vocab_size, 2, seg))
    profiles = [c for c in ctx.calls if c.startswith("profile")]
    assert profiles == ["profile 0", "profile 1", "profile 0"]
    n_inputs = len(pkg.manifest.graphs[0].inputs)
    assert sum(c.startswith("shape") for c in ctx.calls) == 3 * n_inputs
    assert ctx.shapes["tokens"] == (2, 8) and ctx.calls.count("execute") == 6


def test_a_call_outside_every_profile_is_refused_before_anything_runs(package_of):
    pkg = package_of("rmt-tiny")
    stream, ctx, _ = _stream(pkg, batch=2, profiles=[Profile({}, (1, 1, 1), (1, 8, 16))])
    before = stream.snapshot()
    with pytest.raises(EngineCompatibilityError, match="batch 1..1"):
        stream.step(np.zeros((2, 8), dtype=np.int64))
    assert stream.snapshot() == before and "execute" not in ctx.calls


def test_cuda_graphs_are_captured_per_parity_and_recaptured_on_new_shapes(package_of):
    pkg = package_of("rmt-tiny")
    stream, ctx, device = _stream(pkg, cuda_graphs=True)
    rng = np.random.default_rng(2)
    for _ in range(6):
        stream.step(_tokens(rng, pkg.manifest.vocab_size, 2, 8))
    assert stream.graphs.captures == 2 and device.replays == 6
    stream.step(_tokens(rng, pkg.manifest.vocab_size, 2, 20))
    assert stream.graphs.captures == 3 and set(k[1:] for k in stream.graphs.graphs) == {(2, 20)}
    plain, _, _ = _stream(pkg)
    graphs, _, _ = _stream(pkg, cuda_graphs=True)
    out = pkg.manifest.outputs[0].name
    for _ in range(5):  # graph replays compute what plain launches compute
        ids = _tokens(rng, pkg.manifest.vocab_size, 2, 8)
        assert np.array_equal(plain.step(ids)[out], graphs.step(ids)[out])
    assert np.array_equal(plain.state[pkg.manifest.state[0].name], graphs.state[pkg.manifest.state[0].name])


def test_failed_steps_leave_the_state_and_parity_unchanged(package_of):
    pkg = package_of("rmt-tiny")
    stream, ctx, _ = _stream(pkg)
    stream.step(np.full((2, 4), 5))
    before, parity = stream.snapshot(), stream.buffers.parity
    with pytest.raises(TokenRangeError):
        stream.step(np.full((2, 4), pkg.manifest.vocab_size))
    ctx.poison = True
    with pytest.raises(NonFiniteStateError, match="state left unchanged"):
        stream.step(np.full((2, 4), 5))
    assert stream.snapshot() == before and stream.buffers.parity == parity and stream.segments == 1


def test_snapshots_are_the_common_format(package_of):
    pkg = package_of("rmt-tiny")
    stream, _, _ = _stream(pkg, batch=1)
    stream.step(np.full((1, 4), 2))
    blob = stream.snapshot()
    py = runtimes.open(pkg, backend="onnxruntime").stream(1)
    py.restore(blob)  # same bytes, same model id: any memx runtime takes it
    assert py.segments == 1 and np.array_equal(py.state[pkg.manifest.state[0].name], stream.state[pkg.manifest.state[0].name])
    other, _, _ = _stream(pkg, batch=1)
    other.restore(py.snapshot())
    assert other.snapshot() == blob
    with pytest.raises(SnapshotMismatchError):
        _stream(pkg, batch=2)[0].restore(blob)


def test_bookkeeping_units():
    pp = PingPong({"m": "A"}, {"m": "B"})
    assert (pp.reads()["m"], pp.writes()["m"]) == ("A", "B")
    pp.flip()
    assert (pp.reads()["m"], pp.writes()["m"]) == ("B", "A")
    plan = ShapePlan([Profile({}, (1, 1, 4), (1, 8, 8))])
    assert plan.plan(2, 8) == (0, True) and plan.plan(2, 8) == (0, False) and plan.plan(3, 8) == (0, True)
    assert concrete_shape(["batch", "segment", 64], 3, 5) == (3, 5, 64)
    cache, made = GraphCache(), []
    for key in [(0, 2, 8), (1, 2, 8), (0, 2, 8), (0, 2, 9)]:
        cache.get(key, lambda key=key: made.append(key) or key)
    assert made == [(0, 2, 8), (1, 2, 8), (0, 2, 9)] and list(cache.graphs) == [(0, 2, 9)]


def test_generic_runtime_adapter_steps_like_the_device_stream(package_of):
    """runtimes.open(..., backend="tensorrt") drives the same engines through the generic Stream
    (host state, input checks, pools) and computes what TensorRTStream computes."""
    pkg = package_of("rmt-tiny")
    m = pkg.manifest
    device = HostDevice()
    s = m.state[0]
    profiles = [Profile({}, (1, 2, 4), (1, 8, 16)), Profile({}, (1, 2, 4), (17, 32, 32))]
    tags = BuildTags("step", "engines/step.plan", "tensorrt", "10.8.0", "sm90", "fp32", True, False, profiles)
    ctx = FakeContext(device, s.input, s.output, m.outputs[0].name)
    rt = runtimes.open(pkg, backend="tensorrt", engines=[GraphEngine(m.graphs[0], tags, ctx, ShapePlan(profiles))], device_impl=device)
    generic = rt.stream(2, resident=False)
    direct, _, _ = _stream(pkg)
    rng = np.random.default_rng(5)
    out = m.outputs[0].name
    for seg in (8, 8, 20, 4):
        ids = _tokens(rng, m.vocab_size, 2, seg)
        assert np.array_equal(generic.step(ids)[out], direct.step(ids)[out])
    assert np.array_equal(generic.state[s.name], direct.state[s.name])
    assert generic.snapshot() == direct.snapshot()
    assert [c for c in ctx.calls if c.startswith("profile")] == ["profile 0", "profile 1", "profile 0"]
    assert rt.describe()["engine"] == "tensorrt 10.8.0 for sm90"


def test_tensorrt_backend_without_tensorrt_says_what_is_missing(package_of):
    import importlib.util

    if importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_lean"):
        pytest.skip("TensorRT is installed here")
    from memx.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        runtimes.open(package_of("rmt-tiny"), backend="tensorrt", device="cuda")
