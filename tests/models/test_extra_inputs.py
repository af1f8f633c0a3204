"""Extra step inputs beyond tokens/lengths/reset (DESIGN.md §8): an encoder-decoder with a memory
(tests/models/byo_models.py MemorySeq2Seq) takes per-token type ids, a per-row speaker id and
its decoder's own ids. They are declared in the manifest, checked like tokens, carried through
streams, host and device-resident pools, validation, quantization and the C++ runtime, and the
exported graph matches the module over 256 segments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import memx
from memx import runtimes
from memx.errors import ContractError, DTypeError, InputError, RankError, TokenRangeError
from memx.exporter import Package, export
from memx.package.manifest import Manifest
from memx.validation import validate
from tests.models import byo_models as byo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory) -> Package:
    return export(byo.make_seq2seq(), tmp_path_factory.mktemp("s2s") / "s2s.memx", verify_segments=0)


def _extras(rng: np.random.Generator, batch: int | None, seg: int) -> dict[str, np.ndarray]:
    lead = () if batch is None else (batch,)
    return {"type_ids": rng.integers(0, 2, (*lead, seg)), "speaker": rng.integers(0, 3, lead), "decoder_ids": rng.integers(0, 32, (*lead, 4))}


def test_extra_inputs_are_declared_in_the_manifest_in_graph_order(seq2seq):
    m = seq2seq.manifest
    assert [(i.name, i.dtype, i.shape, i.range) for i in m.inputs] == [
        ("type_ids", "int64", ["batch", "segment"], [0, 2]), ("speaker", "int64", ["batch"], [0, 3]), ("decoder_ids", "int64", ["batch", 4], [0, 32])]
    assert [t.name for t in m.graph().inputs] == ["tokens", "lengths", "reset", "type_ids", "speaker", "decoder_ids", "state_in.memory"]
    again = Manifest.from_json(m.to_json())
    assert again.inputs == m.inputs and again.model_id() == m.model_id()
    decoder = next(o for o in m.outputs if o.name == "decoder_logits")
    assert decoder.shape == ["batch", 4, 32] and decoder.segment_axis is None  # the decoder's own length: not masked by lengths


def test_a_model_with_extra_inputs_matches_its_module_over_256_segments(seq2seq):
    report = validate(seq2seq, segments=256, batch=2, progress=False, reference_options={"model": byo.make_seq2seq()})
    assert report.passed, report.summary()
    assert {"logits", "decoder_logits", "state.memory"} <= set(report.per_tensor_max) and report.resets > 0 and report.padded_rows > 0


def test_each_extra_input_changes_what_the_step_computes(seq2seq):
    """The inputs reach the graph: another value of each gives other outputs or another memory."""
    rt = runtimes.open(seq2seq)
    rng = np.random.default_rng(3)
    tokens, base = rng.integers(0, byo.VOCAB, (2, 6)), _extras(rng, 2, 6)
    want = rt.stream(2).step(tokens, **base)
    for name, value in base.items():
        changed = dict(base, **{name: (value + 1) % (2 if name == "type_ids" else 3 if name == "speaker" else 32)})
        s = rt.stream(2)
        got = s.step(tokens, **changed)
        assert not np.allclose(got["decoder_logits"], want["decoder_logits"]), name


def _step_pool_and_streams(rt, pool, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    ids = [pool.open() for _ in range(3)]
    alone = [rt.stream(1) for _ in ids]
    worst = 0.0
    for _ in range(steps):
        feeds = {}
        for sid in ids:
            seg = int(rng.integers(1, byo.SEG + 1))
            feeds[sid] = {"tokens": rng.integers(0, byo.VOCAB, seg), **_extras(rng, None, seg)}
        out = pool.step(feeds)
        for sid, s in zip(ids, alone):
            feed = dict(feeds[sid])
            got = s.step(feed.pop("tokens"), **feed)
            for k, v in got.items():
                assert out[sid][k].shape == v.shape, k
                worst = max(worst, float(np.abs(out[sid][k] - v).max()))
            worst = max(worst, float(np.abs(pool.state(sid)["memory"] - s.state["memory"]).max()))
    return worst


def test_pools_pad_and_carry_extra_inputs_like_lone_streams(seq2seq):
    """Ragged segments of three streams in chunks of two: the pool pads type_ids along the segment
    and stacks the rest; each stream gets what it gets stepped alone (host and device-resident pools)."""
    rt = runtimes.open(seq2seq)
    assert _step_pool_and_streams(rt, rt.pool(max_batch=2), 48, seed=5) <= 1e-5
    torch_rt = runtimes.open(seq2seq, backend="torch", model=byo.make_seq2seq())
    resident = torch_rt.pool(max_batch=2, resident=True)
    assert type(resident.slots).__name__ == "DeviceSlots"
    assert _step_pool_and_streams(torch_rt, resident, 24, seed=6) <= 1e-5


def test_bad_extra_inputs_are_typed_errors_that_leave_the_stream_as_it_was(seq2seq):
    rt = runtimes.open(seq2seq)
    s = rt.stream(2)
    rng = np.random.default_rng(0)
    tokens, good = rng.integers(0, byo.VOCAB, (2, 5)), _extras(rng, 2, 5)
    s.step(tokens, **good)
    before, segments = s.state, s.segments
    cases = [
        ({k: v for k, v in good.items() if k != "speaker"}, InputError, r"missing step inputs.*missing \['speaker'\]"),
        ({**good, "speakr": good["speaker"]}, InputError, r"unknown step inputs.*extra inputs \['type_ids', 'speaker', 'decoder_ids'\].*speakr"),
        ({**good, "decoder_ids": good["decoder_ids"].astype(np.float32)}, DTypeError, r"'decoder_ids' has the wrong dtype: expected int64, got float32"),
        ({**good, "speaker": np.array([0, 3])}, TokenRangeError, r"'speaker' has a value outside its range: expected 0..2, got 3 at \[1\]"),
        ({**good, "decoder_ids": good["decoder_ids"][:, :3]}, InputError, r"'decoder_ids' has the wrong shape: expected \[2, 4\]"),
        ({**good, "type_ids": good["type_ids"][:, :4]}, InputError, r"'type_ids' has the wrong shape: expected \[2, 5\] .*segment 5.*got \[2, 4\]"),
        ({**good, "speaker": good["speaker"][:, None]}, RankError, r"'speaker' has the wrong rank"),
    ]
    for given, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            s.step(tokens, **given)
        assert s.segments == segments and np.array_equal(s.state["memory"], before["memory"])
    pool = rt.pool()
    sid = pool.open()
    with pytest.raises(InputError, match="needs its tokens"):
        pool.step({sid: {"type_ids": good["type_ids"][0]}})
    with pytest.raises(InputError, match="missing step inputs"):
        pool.step({sid: tokens[0]})
    assert np.array_equal(pool.state(sid)["memory"], np.zeros((1, 16), np.float32))


def test_a_package_without_extra_inputs_refuses_them(package_of):
    s = runtimes.open(package_of("rmt-tiny")).stream(1)
    with pytest.raises(InputError, match=r"unknown step inputs: expected no extra inputs .*got \['decoder_ids'\]"):
        s.step(np.zeros(4, dtype=np.int64), decoder_ids=np.zeros(4, dtype=np.int64))


class LeakyTypes(byo.MemorySeq2Seq):
    """Reads type ids at padded positions into its memory: breaks padding invariance."""

    def forward(self, tokens, memory, attention_mask, type_ids, speaker, decoder_ids):
        out = super().forward(tokens, memory, attention_mask, type_ids, speaker, decoder_ids)
        out["memory"] = out["memory"] + 0.1 * type_ids.sum(1, keepdim=True).to(out["memory"].dtype)
        return out


def test_the_contract_covers_extra_inputs(tmp_path):
    inputs = {"type_ids": memx.Input(("segment",), range=(0, 2)), "speaker": memx.Input((), range=(0, 3)), "decoder_ids": memx.Input((4,), range=(0, 32))}
    leaky = memx.wrap(LeakyTypes(), state={"memory": memx.State((16,))}, vocab_size=byo.VOCAB, max_segment_len=byo.SEG, mask="attention_mask", inputs=inputs)
    with pytest.raises(ContractError, match="next state 'memory' depends on padding"):
        export(leaky, tmp_path / "leaky", verify_segments=0)
    assert not (tmp_path / "leaky").exists()
    no_range = dict(inputs, speaker=memx.Input(()))
    with pytest.raises(ContractError, match=r"integer extra input 'speaker' needs its range of values"):
        export(memx.wrap(byo.MemorySeq2Seq(), state={"memory": memx.State((16,))}, vocab_size=byo.VOCAB, max_segment_len=byo.SEG, mask="attention_mask",
                         inputs=no_range), tmp_path / "x", verify_segments=0)
    with pytest.raises(ContractError, match="input 'memory' is also a state"):
        memx.wrap(nn.Linear(2, 2), state={"memory": memx.State((2,))}, vocab_size=4, max_segment_len=4, inputs={"memory": memx.Input((2,), dtype="float32")})


def _memx(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", "from memx.cli import main; main()", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_validate_and_quantize_feed_extra_inputs_in_a_fresh_process(seq2seq, tmp_path):
    checked = _memx("validate", str(seq2seq.path), "--segments", "32", "--batch", "2", "--reference", "tests.models.byo_models:make_seq2seq", "--no-record")
    assert checked.returncode == 0 and "PASS" in checked.stdout, checked.stdout + checked.stderr
    q = _memx("quantize", str(seq2seq.path), "--out", str(tmp_path / "int8"), "--method", "int8-dynamic", "--calib-segments", "8", "--calib-streams", "2")
    assert q.returncode == 0, q.stdout + q.stderr
    quantized = Package.open(tmp_path / "int8").manifest
    assert quantized.inputs == seq2seq.manifest.inputs and quantized.precision == "int8-dynamic"
    rng = np.random.default_rng(1)
    out = runtimes.open(tmp_path / "int8").stream(2).step(rng.integers(0, byo.VOCAB, (2, 7)), **_extras(rng, 2, 7))
    assert out["decoder_logits"].shape == (2, 4, 32)


@pytest.mark.cpp
def test_memx_run_feeds_extra_inputs_like_python(seq2seq, tmp_path):
    """memx-run --input NAME=FILE ([steps, B, ...]) over 64 segments: Python's outputs and final state."""
    from tests.cpp.test_cpp_parity import assert_close, memx_run, run_cpp

    if not memx_run().is_file():
        pytest.skip(f"needs memx-run ({memx_run()} not built: run `make cpp`)")
    rt = runtimes.open(seq2seq)
    seg, steps, batch = byo.SEG, 64, 2
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, byo.VOCAB, (batch, steps * seg - 5))
    per_step = [_extras(rng, batch, seg) for _ in range(steps)]
    np.save(tmp_path / "tokens.npy", tokens)
    flags = []
    for name in per_step[0]:
        np.save(tmp_path / f"{name}.npy", np.stack([e[name] for e in per_step]))  # [steps, B, ...]
        flags += ["--input", f"{name}={tmp_path / (name + '.npy')}"]
    s = rt.stream(batch)
    want: dict[str, list[np.ndarray]] = {}
    for k in range(steps):
        chunk = tokens[:, k * seg : (k + 1) * seg]
        ids = np.zeros((batch, seg), dtype=np.int64)
        ids[:, : chunk.shape[1]] = chunk
        for name, v in s.step(ids, np.full(batch, chunk.shape[1]), **per_step[k]).items():
            want.setdefault(name, []).append(v)
    proc = run_cpp(seq2seq.path, tmp_path / "tokens.npy", seg, "--out", str(tmp_path / "cpp"), *flags)
    assert proc.returncode == 0, proc.stderr
    for name, values in want.items():
        assert_close(name, np.load(tmp_path / "cpp" / f"{name}.npy"), np.stack(values))
    assert_close("state memory", np.load(tmp_path / "cpp" / "state.memory.npy"), s.state["memory"])
    missing = run_cpp(seq2seq.path, tmp_path / "tokens.npy", seg, *flags[:-2])
    assert missing.returncode == 1 and "missing step inputs" in missing.stderr and "'decoder_ids'" in missing.stderr, missing.stderr
    np.save(tmp_path / "bad.npy", np.full((steps, batch), 7, dtype=np.int64))
    bad = run_cpp(seq2seq.path, tmp_path / "tokens.npy", seg, *flags[:2], "--input", f"speaker={tmp_path / 'bad.npy'}", *flags[4:])
    assert bad.returncode == 1 and "'speaker' has a value outside its range: expected 0..2, got 7" in bad.stderr, bad.stderr
