"""memx.wrap on memory models written outside memx (tests/models/byo_models.py): per-layer
memory lists with tied embeddings and a dict return, a batch-second key/value memory with a
tuple return, a bool memory with a ModelOutput-like return. Each exports and matches its own
module over 256 segments (outputs and states, B=2, ragged lengths, resets); the ones that
break the contract are refused naming the problem; a fresh process rebuilds the reference only
when told where it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import memx
from memx.errors import ContractError, ExportError
from memx.exporter import Package, export
from memx.validation import validate
from tests.models import byo_models as byo

ROOT = Path(__file__).resolve().parents[2]
WRAPPED = [byo.make_layered_lm, byo.make_kv, byo.make_seen, byo.make_xl, byo.make_gated]


@pytest.mark.parametrize("make", WRAPPED, ids=lambda f: f.__name__)
def test_a_wrapped_model_exports_and_matches_its_module_over_256_segments(make, tmp_path):
    step = make()
    pkg = export(step, tmp_path / "pkg", verify_segments=0)
    report = validate(pkg, segments=256, batch=2, progress=False, reference_options={"model": step})
    assert report.passed, report.summary()
    assert report.resets > 0 and report.padded_rows > 0  # resets and ragged rows were exercised
    assert any(k.startswith("state.") for k in report.per_tensor_max)  # states compared, not only outputs
    assert pkg.manifest.family == step.family and pkg.manifest.provenance["contract_checks"] == "passed"


def test_the_wrapper_calls_the_module_as_it_is():
    """Full rows, no reset: the wrapped step gives what the module itself gives."""
    step = byo.make_layered_lm()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, byo.VOCAB, (2, 7), generator=g)
    mems = [torch.randn(2, 3, 16, generator=g) for _ in range(2)]
    with torch.no_grad():
        mine = step(tokens, torch.full((2,), 7), torch.zeros(2, dtype=torch.bool), *mems)
        theirs = step.inner(tokens, memories=mems, attention_mask=torch.ones(2, 7, dtype=torch.int64))
    torch.testing.assert_close(mine[0], theirs["logits"])
    torch.testing.assert_close(mine[1], theirs["memories"][0])
    kv = byo.make_kv()
    state = torch.randn(2, 2, 4, 12, generator=g)  # memx layout: batch first
    with torch.no_grad():
        logits, new = kv(tokens, torch.full((2,), 7), torch.zeros(2, dtype=torch.bool), state)
        their_logits, their_new = kv.inner(tokens, state.transpose(0, 1), torch.ones(2, 7))
    torch.testing.assert_close(logits, their_logits)
    torch.testing.assert_close(new, their_new.transpose(0, 1))  # back to batch first


def test_memories_are_described_in_the_manifest_as_memx_carries_them(tmp_path):
    pkg = export(byo.make_seen(), tmp_path / "seen", verify_segments=0)
    assert [(s.name, s.shape, s.dtype) for s in pkg.manifest.state] == [("seen", ["batch", byo.VOCAB], "bool")]  # bool carried as bool, selected as int32 in the graph
    kv = export(byo.make_kv(), tmp_path / "kv", verify_segments=0)
    assert kv.manifest.state[0].shape == ["batch", 2, 4, 12]  # the module's [2, B, 4, 12], batch first
    assert kv.manifest.reference["factory"] == "tests.models.byo_models:make_kv"
    lm = export(byo.make_layered_lm(), tmp_path / "lm", verify_segments=0)
    with safe_open(str(lm.file(lm.manifest.reference["weights"])), "pt") as f:  # tied embeddings written under both names
        assert {"inner.embed.weight", "inner.head.weight"} <= set(f.keys())
    assert lm.manifest.config["user"] == {"d": 16, "n_layers": 2, "slots": 3, "vocab": byo.VOCAB}  # the SimpleNamespace config


def test_models_that_break_the_contract_are_refused_naming_the_problem(tmp_path):
    with pytest.raises(ContractError, match=r"the next state 'kv' depends on padding.*got \d"):
        export(byo.make_leaky_kv(), tmp_path / "leaky", verify_segments=0)
    with pytest.raises(ExportError, match=r"the segment axis \(axis 1\) of 'tokens' was fixed to \d+ by the export"):
        export(byo.make_gru(), tmp_path / "gru", verify_segments=0)
    assert not (tmp_path / "leaky").exists() and not (tmp_path / "gru").exists()


def test_wrap_refuses_descriptions_that_do_not_fit_the_module():
    with pytest.raises(ContractError, match="unknown init"):
        memx.wrap(byo.BatchSecondKV(), state={"kv": memx.State((2, 4, 12), batch_axis=1, init="ones")}, vocab_size=byo.VOCAB, max_segment_len=8)
    with pytest.raises(ContractError, match=r"outputs name entries the module does not return: expected \['0', '1'\], got \['logits'\]"):
        memx.wrap(byo.BatchSecondKV(), state={"kv": memx.State((2, 4, 12), batch_axis=1)}, vocab_size=byo.VOCAB, max_segment_len=8,
                  mask="mask", outputs=["logits"], new_state={"kv": "1"}, call=lambda m, t, kv, mask: m(t, kv, mask.float()))
    with pytest.raises(ContractError, match="batch axis outside its dims"):
        memx.wrap(byo.BatchSecondKV(), state={"kv": memx.State((2, 4, 12), batch_axis=5)}, vocab_size=byo.VOCAB, max_segment_len=8)
    with pytest.raises(ContractError, match="not a memx.State"):
        memx.wrap(byo.BatchSecondKV(), state={"kv": (2, 4, 12)}, vocab_size=byo.VOCAB, max_segment_len=8)


def _memx(*args: str) -> subprocess.CompletedProcess:
    """The memx command in a fresh process that has not imported the test's models."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", "from memx.cli import main; main()", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_a_fresh_process_rebuilds_the_reference_only_when_told_where_it_is(tmp_path):
    pkg = export(byo.make_kv(), tmp_path / "kv", verify_segments=0)
    refused = _memx("validate", str(pkg.path), "--segments", "8", "--no-record")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    text = " ".join((refused.stdout + refused.stderr).split())
    assert "ReferenceModelError" in text and "--trust-reference" in text and "tests.models.byo_models:make_kv" in text
    named = _memx("validate", str(pkg.path), "--segments", "24", "--reference", "tests.models.byo_models:make_kv")
    assert named.returncode == 0 and "PASS" in named.stdout, named.stdout + named.stderr
    trusted = _memx("validate", str(pkg.path), "--segments", "24", "--backend", "torch", "--trust-reference", "--no-record")
    assert trusted.returncode == 0 and "PASS" in trusted.stdout, trusted.stdout + trusted.stderr
    assert Package.open(pkg.path).manifest.validation["onnxruntime:cpu"]["segments"] == 24
    missing = _memx("validate", str(pkg.path), "--segments", "8", "--reference", "tests.models.nowhere:make")
    assert missing.returncode == 2 and "cannot import the reference factory's module" in " ".join((missing.stdout + missing.stderr).split())


@pytest.mark.parametrize("make", [*WRAPPED, byo.make_seq2seq], ids=lambda f: f.__name__)
def test_a_wrapped_package_quantizes_and_validates_in_fresh_processes(make, tmp_path):
    """memx quantize int8-dynamic and fp16, then memx validate (drift, top-1 agreement and KL
    against the module, rebuilt from --reference), each in a fresh process."""
    pkg = export(make(), tmp_path / "fp32", verify_segments=0)
    reference = f"tests.models.byo_models:{make.__name__}"
    for method in ("int8-dynamic", "fp16"):
        q = _memx("quantize", str(pkg.path), "--out", str(tmp_path / method), "--method", method, "--calib-segments", "8", "--calib-streams", "2")
        assert q.returncode == 0, q.stdout + q.stderr
        drift = _memx("validate", str(tmp_path / method), "--segments", "16", "--batch", "2", "--reference", reference)
        assert drift.returncode == 0 and "PASS" in drift.stdout, drift.stdout + drift.stderr
        m = Package.open(tmp_path / method).manifest
        assert m.precision == method and m.state == pkg.manifest.state and m.inputs == pkg.manifest.inputs
        out = memx.runtimes.open(tmp_path / method).stream(2).step(np.zeros((2, 5), dtype=np.int64), **m.sample_inputs(np.random.default_rng(0), 2, 5))
        assert out["logits"].shape == (2, 5, byo.VOCAB)


def test_memx_export_of_a_factory_from_the_command_line(tmp_path):
    out = tmp_path / "lm.memx"
    r = _memx("export", "tests.models.byo_models:make_layered_lm", "--out", str(out), "--verify-segments", "8",
              "--config", '{"vocab": 40, "d": 8, "n_layers": 1, "slots": 2}')
    assert r.returncode == 0, r.stdout + r.stderr
    m = Package.open(out).manifest
    assert m.reference["factory"] == "tests.models.byo_models:make_layered_lm" and m.vocab_size == 40
    assert [s.name for s in m.state] == ["memories.0"] and m.state[0].shape == ["batch", 2, 8]
    again = _memx("validate", str(out), "--segments", "16", "--trust-reference")
    assert again.returncode == 0, again.stdout + again.stderr
    bad = _memx("export", "tests.models.byo_models:make_layered_lm", "--out", str(tmp_path / "x"), "--config", "{not json")
    assert bad.returncode == 2 and "--config is not JSON" in " ".join((bad.stdout + bad.stderr).split())
    assert not (tmp_path / "x").exists()


def test_a_growing_memory_keeps_each_rows_newest_real_entries():
    """XL-style: 6 slots, segments of 4 and 1 real tokens; the buffer holds the newest entries
    of each row in order, and the validity mask says which slots are filled."""
    step = byo.make_xl()
    assert [(s.name, s.shape, s.dtype) for s in step.state_specs()] == [("mem", (6, 16), "float32"), ("mem.valid", (6,), "bool")]
    buf, valid = torch.zeros(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    tokens = torch.randint(0, byo.VOCAB, (2, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, buf1, valid1 = step(tokens, torch.tensor([4, 1]), torch.tensor([True, True]), buf, valid)
        assert valid1.tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]]
        _, buf2, valid2 = step(tokens, torch.tensor([4, 0]), torch.tensor([False, False]), buf1, valid1)
    assert valid2.tolist() == [[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]]
    torch.testing.assert_close(buf2[0, :2], buf1[0, 4:])  # the older entries moved up
    torch.testing.assert_close(buf2[1], buf1[1])  # an empty row keeps its memory


def _user_lines(fn) -> int:
    """Lines a user writes to make the step: the function's statements (docstring left out),
    with the module's private helpers it calls (make_kv's _wrap_kv)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(fn)).body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    lines = sum(st.end_lineno - st.lineno + 1 for st in body)
    called = {n.func.id for st in body for n in ast.walk(st) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id.startswith("_")}
    return lines + sum(_user_lines(getattr(byo, name)) for name in sorted(called))


def test_the_user_side_of_each_wrapped_model_is_a_few_lines():
    """What memx.wrap asks of a user, counted: at most 15 lines around a module from another
    project, at most 10 around a Hugging Face model (its construction included)."""
    third_party = {f.__name__: _user_lines(f) for f in [*WRAPPED, byo.make_seq2seq, byo.make_gru, byo.make_leaky_kv]}
    hugging_face = {f.__name__: _user_lines(f) for f in (byo.make_gpt2_rmt, byo.make_minilm_rmt)}
    print("\nuser-side lines:", {**third_party, **hugging_face})
    assert max(third_party.values()) <= 15 and max(hugging_face.values()) <= 10, (third_party, hugging_face)
    assert min(third_party.values()) >= 2  # the helper's lines are counted
