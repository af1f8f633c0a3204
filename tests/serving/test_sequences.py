"""The Python-backend model's logic without Triton (memx.serving.sequences): many sequences
stepped together give each one exactly what its own local Stream gives, over ragged lengths,
restarts and ends; idle sequences are released; a bad request fails alone, typed."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from memx.errors import SequenceError, TokenRangeError
from memx.package import snapshot as snap
from memx.serving.sequences import Request, SequenceServer, error_text

SEQUENCES, SEGMENTS = 24, 64


@pytest.fixture(scope="module")
def rt(package_of):
    return runtimes.open(package_of("rmt-tiny"))


def test_many_sequences_of_many_rows_batched_give_each_what_its_own_stream_gives(rt):
    """24 sequences of 1..4 rows (a client's stream(R) is one sequence), 64 segments: some wait
    a turn, rows have ragged lengths and their own resets, START restarts a whole sequence.
    Every output (zero past each row's length) and every state equals a local Stream(R)'s."""
    server = SequenceServer(rt, max_batch=8)
    rng = np.random.default_rng(0)
    vocab, seg = rt.manifest.vocab_size, rt.manifest.segment["max"]
    rows = {c: int(rng.integers(1, 5)) for c in range(1, SEQUENCES + 1)}
    local = {c: rt.stream(r) for c, r in rows.items()}
    started: set[int] = set()
    worst = 0.0
    for step in range(SEGMENTS):
        live = sorted(rng.choice(list(local), size=rng.integers(1, SEQUENCES), replace=False).tolist())  # some sequences wait a turn
        reqs, want = [], {}
        for c in live:
            R, S = rows[c], int(rng.integers(1, seg + 1))
            tokens = rng.integers(0, vocab, (R, S))
            lengths = rng.integers(1, S + 1, R)
            restart = c not in started or rng.random() < 0.03  # START mid-stream: the whole sequence restarts
            reset = rng.random(R) < 0.05  # single rows start anew
            reqs.append(Request(corrid=c, tokens=tokens, start=restart, lengths=lengths, reset=reset))
            if restart:
                local[c].reset()  # START: a new sequence, its segment count from 0
            want[c] = local[c].step(tokens, lengths, reset)["logits"]
            started.add(c)
        replies = server.handle(reqs)
        for req, reply in zip(reqs, replies):
            assert reply.error is None, reply.error
            assert reply.outputs["logits"].shape == want[req.corrid].shape
            worst = max(worst, float(np.abs(reply.outputs["logits"] - want[req.corrid]).max()))
    assert worst <= 1e-5
    for c in local:  # states too, and the sequence's snapshot is a local Stream(R)'s
        data = snap.decode(server.snapshot(c))
        assert data.pending_reset.shape == (rows[c],) and data.segments == local[c].segments
        assert np.allclose(data.states["memory"], local[c].state["memory"], atol=1e-5)


def test_a_sequence_restored_from_a_local_streams_snapshot_continues_it(rt):
    local = rt.stream(3)
    rng = np.random.default_rng(2)
    for _ in range(4):
        local.step(rng.integers(0, 64, (3, 5)))
    server = SequenceServer(rt)
    assert server.handle([Request(corrid=8, start=True, command="restore", snapshot=local.snapshot())])[0].error is None
    assert len(server.streams[8]) == 3
    tokens, lengths = rng.integers(0, 64, (3, 5)), np.array([5, 2, 4])
    got = server.handle([Request(corrid=8, tokens=tokens, lengths=lengths)])[0].outputs["logits"]
    assert np.allclose(got, local.step(tokens, lengths)["logits"], atol=1e-6)
    assert server.snapshot(8) == local.snapshot()
    wrong_rows = server.handle([Request(corrid=8, tokens=tokens[:2])])[0].error
    assert type(wrong_rows).__name__ == "BatchMismatchError" and wrong_rows.expected == 3 and wrong_rows.actual == 2
    assert server.snapshot(8) == local.snapshot()  # refused: unchanged


def test_end_frees_a_sequence_and_a_request_without_start_is_a_sequence_error(rt):
    server = SequenceServer(rt)
    assert server.handle([Request(corrid=5, tokens=np.arange(4), start=True, end=True)])[0].error is None
    assert 5 not in server.streams
    reply = server.handle([Request(corrid=5, tokens=np.arange(4))])[0]
    assert isinstance(reply.error, SequenceError) and "sequence 5 is not live on this server" in str(reply.error)
    assert error_text(reply.error).startswith("SequenceError: sequence 5")


def test_a_sequence_idle_past_its_timeout_is_released(rt):
    now = [0.0]
    server = SequenceServer(rt, idle_timeout_s=10, clock=lambda: now[0])
    server.handle([Request(corrid=1, tokens=np.arange(3), start=True), Request(corrid=2, tokens=np.arange(3), start=True)])
    now[0] = 8.0
    server.handle([Request(corrid=2, tokens=np.arange(3))])
    now[0] = 12.0
    replies = server.handle([Request(corrid=1, tokens=np.arange(3)), Request(corrid=2, tokens=np.arange(3))])
    assert isinstance(replies[0].error, SequenceError) and replies[1].error is None
    assert set(server.streams) == {2}


def test_a_bad_request_fails_alone_and_leaves_its_stream_and_the_others_unchanged(rt):
    server = SequenceServer(rt)
    server.handle([Request(corrid=c, tokens=np.arange(4), start=True) for c in (1, 2, 3)])
    before = {c: server.snapshot(c) for c in (1, 2, 3)}
    replies = server.handle([Request(corrid=1, tokens=np.arange(4)), Request(corrid=2, tokens=np.array([0, 10**6])), Request(corrid=3, tokens=np.arange(2))])
    assert replies[0].error is None and replies[2].error is None
    assert isinstance(replies[1].error, TokenRangeError)
    assert server.snapshot(2) == before[2]
    assert server.snapshot(1) != before[1]
    # a reset row of a request that fails is put back as it was
    replies = server.handle([Request(corrid=2, tokens=np.array([[0, 10**6]]), reset=np.array([True]))])
    assert isinstance(replies[0].error, TokenRangeError) and server.snapshot(2) == before[2]


def test_snapshot_and_restore_commands_move_a_sequence_between_servers(rt):
    a, b = SequenceServer(rt), SequenceServer(rt)
    rng = np.random.default_rng(1)
    for i in range(5):
        a.handle([Request(corrid=9, tokens=rng.integers(0, 64, 6), start=i == 0)])
    blob = a.handle([Request(corrid=9, command="snapshot")])[0].outputs["MEMX_SNAPSHOT"]
    assert b.handle([Request(corrid=42, start=True, command="restore", snapshot=blob)])[0].error is None
    tokens = rng.integers(0, 64, 6)
    ya = a.handle([Request(corrid=9, tokens=tokens)])[0].outputs["logits"]
    yb = b.handle([Request(corrid=42, tokens=tokens)])[0].outputs["logits"]
    assert np.array_equal(ya, yb)
    reply = b.handle([Request(corrid=43, start=True, command="restore", snapshot=blob[:-1])])[0]
    assert reply.error is not None and type(reply.error).__name__ == "SnapshotCorruptError"
    assert isinstance(b.handle([Request(corrid=42, command="explode")])[0].error, SequenceError)


def test_a_snapshot_store_keeps_sequences_across_a_restart_and_forgets_them_at_their_end(rt, tmp_path):
    store = tmp_path / "store"
    rng = np.random.default_rng(4)
    local = {c: rt.stream(1) for c in (3, 4)}
    first = SequenceServer(rt, store=store)
    for i in range(6):
        reqs = [Request(corrid=c, tokens=rng.integers(0, 64, 5), start=i == 0) for c in local]
        for req, reply in zip(reqs, first.handle(reqs)):
            assert reply.error is None
            local[req.corrid].step(req.tokens[None], reset=np.array([i == 0]))
    assert sorted(p.name for p in store.iterdir()) == ["3.snap", "4.snap"]
    del first  # the server restarts: a new process, the same store
    second = SequenceServer(rt, store=store)
    tokens = rng.integers(0, 64, 5)
    reply = second.handle([Request(corrid=3, tokens=tokens, start=True, command="resume")])[0]
    assert reply.error is None
    assert np.allclose(reply.outputs["logits"], local[3].step(tokens[None])["logits"], atol=1e-6)
    assert second.handle([Request(corrid=3, command="end", end=True)])[0].error is None
    assert sorted(p.name for p in store.iterdir()) == ["4.snap"]  # ended: gone; the other kept
    missing = second.handle([Request(corrid=3, tokens=tokens, start=True, command="resume")])[0].error
    assert isinstance(missing, SequenceError) and "not in this server's snapshot store" in str(missing)
    assert 3 not in second.streams
    bad = second.handle([Request(corrid=4, tokens=np.array([1, 10**6]), start=True, command="resume")])[0].error
    assert isinstance(bad, TokenRangeError)
    assert snap.decode((store / "4.snap").read_bytes()).states["memory"].shape[0] == 1  # a failed step left the stored state
    nostore = SequenceServer(rt).handle([Request(corrid=4, tokens=tokens, start=True, command="resume")])[0].error
    assert isinstance(nostore, SequenceError) and "no store" in str(nostore)


def test_a_typed_error_crosses_the_wire_with_its_fields(rt):
    from memx.serving.client import typed_error

    server = SequenceServer(rt)
    server.handle([Request(corrid=1, tokens=np.arange(3), start=True)])
    e = server.handle([Request(corrid=1, tokens=np.array([0, 10**6]))])[0].error
    wire = f"[StatusCode.INTERNAL] {error_text(e)}"
    back = typed_error(RuntimeError(wire), model="m", url="u")
    assert type(back) is TokenRangeError and str(back) == str(e)
    import json

    as_json = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731  (what JSON keeps of a value)
    assert e.expected is not None and (back.expected, back.actual, back.hint) == (as_json(e.expected), as_json(e.actual), e.hint)
    plain = typed_error(RuntimeError("[StatusCode.INTERNAL] TokenRangeError: token 7 out of range"), model="m", url="u")
    assert type(plain) is TokenRangeError and str(plain) == "token 7 out of range"


def test_a_store_ttl_removes_sequences_nobody_came_back_for_and_keeps_live_ones(rt, tmp_path):
    import os
    import time as clock

    store = tmp_path / "store"
    now = [0.0]
    server = SequenceServer(rt, store=store, store_ttl_s=3600, idle_timeout_s=60, clock=lambda: now[0])
    server.handle([Request(corrid=c, tokens=np.arange(4), start=True) for c in (1, 2, 3)])
    (store / "notes.txt").write_text("not a sequence")
    day_ago = clock.time() - 86400
    for c in (1, 2):  # untouched for a day; 2 is still live on this server
        os.utime(store / f"{c}.snap", (day_ago, day_ago))
    now[0] = 50.0  # within the idle timeout: 1, 2, 3 are live
    server.handle([Request(corrid=2, command="snapshot")])
    assert sorted(p.name for p in store.iterdir()) == ["1.snap", "2.snap", "3.snap", "notes.txt"]  # checked at most once a minute
    now[0] = 70.0  # 1 and 3 idle past 60 s (released here), 2 (seen at 50) live and stepping
    server.handle([Request(corrid=2, tokens=np.arange(4))])
    assert sorted(p.name for p in store.iterdir()) == ["2.snap", "3.snap", "notes.txt"]  # 1: a day old and not live; 3: fresh
    reply = server.handle([Request(corrid=1, tokens=np.arange(4), start=True, command="resume")])[0]
    assert isinstance(reply.error, SequenceError) and "not in this server's snapshot store" in str(reply.error)


def test_a_request_whose_inputs_do_not_stack_with_the_others_fails_alone():
    """Requests of one execute call are stacked into one batch; one with a wrong extra-input
    shape (it cannot be stacked) gets its typed error, the other steps as its own stream would."""
    from tests.package_cache import exported_factory

    rt2 = runtimes.open(exported_factory("tests.models.byo_models:make_seq2seq"))
    server = SequenceServer(rt2)
    rng = np.random.default_rng(6)
    m = rt2.manifest
    good, bad = m.sample_inputs(rng, 1, 5), m.sample_inputs(rng, 1, 5)
    bad["decoder_ids"] = np.zeros((1, 7), dtype=bad["decoder_ids"].dtype)  # declared (batch, 4)
    tokens = rng.integers(0, m.vocab_size, (1, 5))
    local = rt2.stream(1)
    replies = server.handle([Request(corrid=1, tokens=tokens, start=True, inputs=good), Request(corrid=2, tokens=tokens, start=True, inputs=bad)])
    assert replies[0].error is None
    assert np.allclose(replies[0].outputs["logits"], local.step(tokens, **good)["logits"], atol=1e-6)
    assert replies[1].error is not None and "decoder_ids" in str(replies[1].error)
