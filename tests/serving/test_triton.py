"""memx packages served by a real tritonserver (nvidia-pytriton's, started here on 127.0.0.1
with free ports by memx.serving.launcher): every sequence's outputs equal a local Stream fed
the same inputs; snapshots move sequences between the server and local streams; errors come
back typed. Marker ``triton``: skipped with the reason where the Triton client is absent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from memx import runtimes
from memx.errors import ModelNotReadyError, SequenceError, ServerUnavailableError, TokenRangeError
from memx.serving.launcher import TritonServer, free_port
from memx.serving.repository import RepositoryOptions, write_repository

pytestmark = pytest.mark.triton

SEQUENCES, SEGMENTS = 16, 48
ZOO_SEQUENCES, ZOO_SEGMENTS = 64, 128  # every zoo package: 8,192 segments each


@pytest.fixture(scope="module")
def served(tmp_path_factory, package_of):
    pkg = package_of("rmt-tiny")
    repo = tmp_path_factory.mktemp("repo") / "repo"
    write_repository(pkg, repo, RepositoryOptions(name="rmt", max_batch=8, idle_timeout_s=30))
    with TritonServer(repo) as server:
        yield pkg, server


@pytest.mark.parametrize("protocol, shared_memory", [("grpc", True), ("grpc", False), ("http", True), ("http", False)])
def test_a_served_stream_equals_a_local_stream_over_ragged_lengths_and_resets(served, protocol, shared_memory):
    """A stream of 16 rows (one sequence), 48 segments; outputs over the wire or through a shared-memory region."""
    import os

    from memx import serving

    pkg, server = served
    model = serving.connect(server.grpc_url if protocol == "grpc" else server.http_url, "rmt", protocol, shared_memory=shared_memory)
    remote, local = model.stream(SEQUENCES), runtimes.open(pkg).stream(SEQUENCES)
    assert (remote.region is not None) == shared_memory
    region = f"/dev/shm/{remote.region.name}" if shared_memory else None
    rng = np.random.default_rng(3)
    seg, vocab = local.manifest.segment["max"], local.manifest.vocab_size
    worst = 0.0
    for step in range(SEGMENTS):
        width = int(rng.integers(1, seg + 1))
        tokens = rng.integers(0, vocab, (SEQUENCES, width))
        lengths = rng.integers(1, width + 1, SEQUENCES)
        reset = rng.random(SEQUENCES) < 0.05
        want, got = local.step(tokens, lengths, reset), remote.step(tokens, lengths, reset)
        worst = max(worst, float(np.abs(want["logits"] - got["logits"]).max()))
    assert worst <= 1e-5
    local2 = runtimes.open(pkg).stream(SEQUENCES)
    local2.restore(remote.snapshot())  # out of the server, into a local stream: it continues exactly
    for name in local.state:
        assert np.allclose(local2.state[name], local.state[name], atol=1e-5)
    if region:
        assert os.path.exists(region)
    remote.close()
    if region:
        assert not os.path.exists(region)  # the region is given back


def test_shared_memory_falls_back_to_the_wire_or_refuses_typed_and_is_freed_with_the_stream(served, monkeypatch):
    import gc
    import os

    from memx import serving
    from memx.errors import ServingError

    pkg, server = served
    model = serving.connect(server.grpc_url, "rmt")
    dropped = model.stream(2)
    path = f"/dev/shm/{dropped.region.name}"
    dropped.step(np.arange(6).reshape(2, 3))
    del dropped  # never closed: its region still goes
    gc.collect()
    assert not os.path.exists(path)

    from tritonclient.utils import InferenceServerException

    def refuse(*args, **kwargs):
        raise InferenceServerException("failed to open shared memory region")  # a server in another IPC namespace

    monkeypatch.setattr(model.client, "register_system_shared_memory", refuse)
    fallback = model.stream(2)
    assert fallback.region is None
    assert fallback.step(np.arange(6).reshape(2, 3))["logits"].shape == (2, 3, 64)
    fallback.close()
    strict = serving.connect(server.grpc_url, "rmt", shared_memory=True)
    monkeypatch.setattr(strict.client, "register_system_shared_memory", refuse)
    with pytest.raises(ServingError, match="shared-memory region") as e:
        strict.stream(2)
    assert "shared_memory=False" in e.value.hint
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"memx-{os.getpid()}-")]  # nothing left behind


def test_a_local_stream_moves_onto_the_server_and_continues(served):
    from memx import serving

    pkg, server = served
    local = runtimes.open(pkg).stream(2)
    rng = np.random.default_rng(5)
    for _ in range(6):
        local.step(rng.integers(0, 64, (2, 8)))
    remote = serving.connect(server.grpc_url, "rmt").stream(2)
    remote.restore(local.snapshot())
    tokens = rng.integers(0, 64, (2, 8))
    assert np.allclose(remote.step(tokens)["logits"], local.step(tokens)["logits"], atol=1e-5)
    assert remote.segments == local.segments
    remote.close()


def test_errors_come_back_typed_and_disturb_no_other_sequence(served):
    from memx import serving

    pkg, server = served
    model = serving.connect(server.grpc_url, "rmt")
    a, b = model.stream(1), model.stream(1)
    a.step(np.arange(4)[None]), b.step(np.arange(4)[None])
    before = b.snapshot()
    with pytest.raises(TokenRangeError):
        b.step(np.array([[0, 10**6]]))
    assert b.snapshot() == before
    a.close()
    with pytest.raises(SequenceError, match="no longer knows this sequence"):
        a.fresh = [False]  # as if the stream did not know it had ended
        a.step(np.arange(4)[None])
    with pytest.raises(SequenceError, match="no longer knows this sequence"):  # a sequence id nobody started
        model.infer(123456789, {"TOKENS": np.arange(4)[None, None]})
    assert np.allclose(b.step(np.arange(4)[None])["logits"], _step_local(pkg, before, np.arange(4)), atol=1e-5)  # b went on undisturbed
    with pytest.raises(ModelNotReadyError):
        serving.connect(server.grpc_url, "no-such-model")
    for protocol in ("grpc", "http"):
        with pytest.raises(ServerUnavailableError):
            serving.connect(f"127.0.0.1:{free_port()}", "rmt", protocol)
    b.close()


def _step_local(pkg, blob, tokens):
    local = runtimes.open(pkg).stream(1)
    local.restore(blob)
    return local.step(tokens[None])["logits"]


def test_sequences_outlive_a_server_restart_and_an_idle_timeout_through_the_snapshot_store(tmp_path, package_of):
    """...and a snapshot taken on one server continues on another."""
    from memx import serving

    pkg = package_of("rmt-tiny")
    write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="rmt", max_batch=4, idle_timeout_s=1.0, snapshot_store=str(tmp_path / "store")))
    write_repository(pkg, tmp_path / "plain", RepositoryOptions(name="rmt", max_batch=4, idle_timeout_s=1.0))
    rng = np.random.default_rng(8)
    local = runtimes.open(pkg).stream(3)

    def step_both(remote):
        tokens = rng.integers(0, 64, (3, 6))
        return float(np.abs(local.step(tokens)["logits"] - remote.step(tokens)["logits"]).max())

    with TritonServer(tmp_path / "repo") as server:
        remote = serving.connect(server.grpc_url, "rmt").stream(3)
        assert max(step_both(remote) for _ in range(5)) <= 1e-5
        port = server.grpc_port
        moved = remote.snapshot()  # bytes out of this server, for another one below
        twin = runtimes.open(pkg).stream(3)
        twin.restore(local.snapshot())
    with TritonServer(tmp_path / "repo", grpc_port=port) as server:  # restarted: Triton knows no sequence
        remote.model = serving.connect(server.grpc_url, "rmt")
        assert max(step_both(remote) for _ in range(3)) <= 1e-5  # resumed from the store
        time.sleep(2.5)  # past the idle timeout: Triton and the model released the sequences
        assert step_both(remote) <= 1e-5
        remote.close()
        assert not list((tmp_path / "store").glob("*.snap"))  # ended: forgotten
    with TritonServer(tmp_path / "plain") as server:  # without a store an idle sequence is lost, typed
        other = serving.connect(server.grpc_url, "rmt").stream(3)
        other.restore(moved)  # the first server's sequence continues on a second server
        for _ in range(4):
            tokens = rng.integers(0, 64, (3, 6))
            assert np.abs(other.step(tokens)["logits"] - twin.step(tokens)["logits"]).max() <= 1e-5
        other.close()
        remote = serving.connect(server.grpc_url, "rmt").stream(1)
        remote.step(np.arange(4)[None])
        time.sleep(2.5)
        with pytest.raises(SequenceError, match="no longer knows this sequence"):
            remote.step(np.arange(4)[None])
        remote.reset()
        assert remote.step(np.arange(4)[None])["logits"].shape == (1, 4, 64)


def test_a_killed_client_disturbs_no_other_sequence(served, tmp_path):
    import os
    import subprocess
    import sys

    from memx import serving
    from tests.test_cli_errors import ROOT

    pkg, server = served
    script = (f"import numpy as np; from memx import serving; s = serving.connect({server.grpc_url!r}, 'rmt').stream(4)\n"
              "print('up', flush=True)\nwhile True: s.step(np.random.default_rng().integers(0, 64, (4, 8)))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        remote, local = serving.connect(server.grpc_url, "rmt").stream(2), runtimes.open(pkg).stream(2)
        rng = np.random.default_rng(9)
        worst = 0.0
        for i in range(30):
            if i == 10:
                proc.kill()  # mid-stream, requests in flight
                proc.wait(10)
            tokens = rng.integers(0, 64, (2, 8))
            worst = max(worst, float(np.abs(local.step(tokens)["logits"] - remote.step(tokens)["logits"]).max()))
        assert worst <= 1e-5
        remote.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_package_with_extra_step_inputs_is_served_with_them(tmp_path):
    from memx import serving
    from tests.package_cache import exported_factory

    pkg = exported_factory("tests.models.byo_models:make_seq2seq")
    write_repository(pkg, tmp_path / "repo", RepositoryOptions(name="s2s", max_batch=4))
    local = runtimes.open(pkg).stream(3)
    rng = np.random.default_rng(11)
    with TritonServer(tmp_path / "repo") as server:
        remote = serving.connect(server.grpc_url, "s2s").stream(3)
        for _ in range(12):
            width = int(rng.integers(1, pkg.manifest.segment["max"] + 1))
            lengths = rng.integers(1, width + 1, 3)
            feed = dict(tokens=rng.integers(0, pkg.manifest.vocab_size, (3, width)), lengths=lengths)
            extra = {i.name: rng.integers(i.range[0], i.range[1], [3] + [width if d == "segment" else d for d in i.shape[1:]]) for i in pkg.manifest.inputs}
            want, got = local.step(**feed, **extra), remote.step(**feed, **extra)
            for name in want:
                assert np.allclose(want[name], got[name], atol=1e-5), name
        remote.close()


def test_every_zoo_package_is_served_as_its_local_stream_runs(tmp_path):
    """∞-former (many states: the swap bug of Triton's implicit state), Memformer (two graphs), all
    of them: 64 one-row client streams and one stream of 8 rows (65 sequences) step concurrently,
    the server batching them, and every row equals its row of a local Stream(72)."""
    from concurrent.futures import ThreadPoolExecutor

    from memx import serving
    from memx.zoo import zoo_entries
    from tests.package_cache import exported

    repo = tmp_path / "repo"
    repo.mkdir()
    pkgs = {}
    for entry in zoo_entries():
        pkgs[entry.name] = exported(entry.name)
        one = write_repository(pkgs[entry.name], tmp_path / f"one-{entry.name}", RepositoryOptions(name=entry.name, max_batch=ZOO_SEQUENCES))
        (one / entry.name).rename(repo / entry.name)
    rng = np.random.default_rng(17)
    wide = 8
    rows = ZOO_SEQUENCES + wide
    with TritonServer(repo) as server, ThreadPoolExecutor(16) as clients:
        for name, pkg in pkgs.items():
            local = runtimes.open(pkg).stream(rows)
            model = serving.connect(server.grpc_url, name)
            streams = [model.stream(1) for _ in range(ZOO_SEQUENCES)] + [model.stream(wide)]
            spans = [slice(b, b + 1) for b in range(ZOO_SEQUENCES)] + [slice(ZOO_SEQUENCES, rows)]
            worst = 0.0
            for _ in range(ZOO_SEGMENTS):
                width = int(rng.integers(1, pkg.manifest.segment["max"] + 1))
                tokens, lengths = rng.integers(0, pkg.manifest.vocab_size, (rows, width)), rng.integers(1, width + 1, rows)
                reset = rng.random(rows) < 0.02
                want = local.step(tokens, lengths, reset)
                got = list(clients.map(lambda i: streams[i].step(tokens[spans[i]], lengths[spans[i]], reset[spans[i]]), range(len(streams))))
                for k in want:
                    served = np.concatenate([g[k] for g in got])
                    # relative to the output's scale: the server batches other rows together than the
                    # local stream does, so fp32 sums run in another order (memformer's logits reach ~10)
                    worst = max(worst, float(np.abs(want[k] - served).max() / max(1.0, float(np.abs(want[k]).max()))))
            assert worst <= 1e-5, (name, worst)
            for s in streams:
                s.close()


def test_memx_serve_up_in_a_fresh_process_serves_until_stopped(tmp_path, package_of):
    import os
    import signal
    import subprocess
    import sys

    from memx import serving
    from tests.test_cli_errors import ROOT

    write_repository(package_of("rmt-tiny"), tmp_path / "repo", RepositoryOptions(name="rmt"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from memx.cli import main; main()", "serve", "up", str(tmp_path / "repo"), "--grpc-port", str(port), "--http-port", "0"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # after the server env is made (pip, once) and the server is ready
        assert "serving" in line and f"127.0.0.1:{port}" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        stream = serving.connect(f"127.0.0.1:{port}", "rmt").stream(1)
        assert stream.step(np.arange(5)[None])["logits"].shape == (1, 5, 64)
        stream.close()
        proc.send_signal(signal.SIGTERM)  # how a supervisor stops it (Ctrl-C takes the same path)
        assert proc.wait(timeout=60) == 0  # Triton drains its models first (about 4 s here)
    finally:
        if proc.poll() is None:  # a failed check: stop it the way that stops its tritonserver too
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    with pytest.raises(ServerUnavailableError):
        serving.connect(f"127.0.0.1:{port}", "rmt")


def test_a_repository_of_an_older_memx_is_refused_at_connect_naming_the_fix(tmp_path, package_of):
    from memx import serving
    from memx.errors import ServingError

    repo = write_repository(package_of("rmt-tiny"), tmp_path / "repo", RepositoryOptions(name="rmt"))
    config = repo / "rmt" / "config.pbtxt"
    text = config.read_text()
    assert 'name: "TOKENS"\n  data_type: TYPE_INT64\n  dims: [ -1, -1 ]' in text
    config.write_text(text.replace('name: "TOKENS"\n  data_type: TYPE_INT64\n  dims: [ -1, -1 ]', 'name: "TOKENS"\n  data_type: TYPE_INT64\n  dims: [ -1 ]'))
    with TritonServer(repo) as server:
        with pytest.raises(ServingError, match="older memx") as e:
            serving.connect(server.grpc_url, "rmt")
        assert "--force" in e.value.hint
