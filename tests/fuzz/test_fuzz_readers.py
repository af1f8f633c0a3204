"""Fuzzing both readers (issue 17): generated snapshots and manifests — forged snapshot headers
(checksum recomputed), altered snapshot bytes, edited and byte-mutated manifests — each get a
typed memx error or a correct reading from Python, and the same verdict from libmemx (the
cases go to cpp/runtime/tests/test_fuzz.cc's judge through MEMX_FUZZ_DIR)."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from memx.package import snapshot as snap
from memx.package.manifest import Manifest
from tests.data.snapshots import make_corpus
from tests.fuzz.generate import ROOT, Tally, cases, mutate_bytes, mutate_json, seed

DATA = ROOT / "tests" / "data"
SNAPSHOTS = json.loads((DATA / "snapshots" / "corpus.json").read_text(encoding="utf-8"))
SCHEMA = {name: (tuple(s["shape"]), s["dtype"]) for name, s in SNAPSHOTS["schema"].items()}
MANIFEST_BASE = json.loads((DATA / "manifests" / "corpus.json").read_text(encoding="utf-8"))["base"]
MEMX_TESTS = Path(os.environ.get("MEMX_TESTS", ROOT / "build" / "cpp" / "memx_tests"))
CPP_TIMEOUT_S = 300


def restore(blob: bytes) -> snap.SnapshotData:
    return snap.decode_checked(blob, model_id=SNAPSHOTS["model_id"], batch=SNAPSHOTS["batch"], schema=SCHEMA)


def forged_header(rng: random.Random, good: bytes) -> bytes:
    """A structural edit of the header as JSON, the payload kept and the checksum recomputed."""
    _, _, length = struct.unpack_from("<8sHI", good)
    header = json.loads(good[14 : 14 + length])
    text = json.dumps(mutate_json(rng, header)).encode()
    return make_corpus.raw_header(good, text)


def generated_cases(n_snapshots: int, n_manifests: int) -> list[tuple[str, str, bytes]]:
    """(file name, kind, bytes): forged headers and altered bytes of the corpus's valid snapshot,
    structural edits and byte mutations of the manifest corpus's base."""
    rng = random.Random(seed())
    good = (DATA / "snapshots" / "valid.snap").read_bytes()
    base_text = json.dumps(MANIFEST_BASE).encode()
    out = []
    for i in range(n_snapshots):
        blob = forged_header(rng, good) if i % 2 == 0 else mutate_bytes(rng, good)
        out.append((f"s{i:06d}.snap", "forged" if i % 2 == 0 else "altered", blob))
    for i in range(n_manifests):
        text = json.dumps(mutate_json(rng, MANIFEST_BASE)).encode() if i % 2 == 0 else mutate_bytes(rng, base_text)
        out.append((f"m{i:06d}.json", "manifest", text))
    return out


def python_verdicts(generated: list[tuple[str, str, bytes]], good: bytes) -> dict[str, str]:
    tallies = {kind: Tally(f"{kind} {'manifests' if kind == 'manifest' else 'snapshots'} (Python)") for kind in ("forged", "altered", "manifest")}
    verdicts: dict[str, str] = {}
    original = restore(good)
    for index, (name, kind, blob) in enumerate(generated):
        tally = tallies[kind]
        if kind == "manifest":
            verdicts[name] = tally.run(index, lambda: Manifest.from_bytes(blob))
            continue
        got: list[snap.SnapshotData] = []
        verdicts[name] = tally.run(index, lambda: got.append(restore(blob)))
        if got and kind == "altered" and blob != good:
            tally.fail(index, "altered snapshot bytes were accepted")
        if got and kind == "forged":  # a forgery memx cannot tell from a snapshot: it must read back as itself
            again = snap.decode(snap.encode(got[0]))
            same = again.segments == got[0].segments and np.array_equal(again.pending_reset, got[0].pending_reset)
            if not same or any(not np.array_equal(again.states[k], got[0].states[k]) for k in got[0].states):
                tally.fail(index, "an accepted forged snapshot does not read back as itself")
            if any(not np.array_equal(got[0].states[k], original.states[k]) for k in original.states):
                tally.fail(index, "a header edit changed the state values read from an unchanged payload")
    for tally in tallies.values():
        tally.check()
    return verdicts


def test_both_readers_give_every_generated_snapshot_and_manifest_the_same_verdict(tmp_path):
    good = (DATA / "snapshots" / "valid.snap").read_bytes()
    generated = generated_cases(cases(1500), cases(1500))
    verdicts = python_verdicts(generated, good)
    assert set(verdicts.values()) >= {"ok", "SnapshotCorruptError", "SnapshotMismatchError", "ManifestError"}

    if not MEMX_TESTS.is_file():
        pytest.skip(f"the C++ half needs {MEMX_TESTS} (`make cpp`); the Python half passed")
    for name, _, blob in generated:
        (tmp_path / name).write_bytes(blob)
    target = {"model_id": SNAPSHOTS["model_id"], "batch": SNAPSHOTS["batch"], "schema": SNAPSHOTS["schema"]}
    (tmp_path / "cases.json").write_text(json.dumps({"snapshot": target, "cases": [{"file": n, "kind": "manifest" if k == "manifest" else "snapshot"} for n, k, _ in generated]}))
    run = subprocess.run([str(MEMX_TESTS), "--gtest_filter=Fuzz.PythonsGeneratedCasesGetTheirVerdictsHere", "--gtest_brief=1"],
                         env={**os.environ, "MEMX_FUZZ_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=CPP_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    cpp = json.loads((tmp_path / "cpp-verdicts.json").read_text())
    differ = [(n, verdicts[n], cpp.get(n)) for n, _, _ in generated if cpp.get(n) != verdicts[n]]
    tally = Tally("cross-language verdicts", cases=len(generated), refused=sum(v != "ok" for v in verdicts.values()), accepted=sum(v == "ok" for v in verdicts.values()))
    tally.failures = [f"{n}: Python {p}, C++ {c}" for n, p, c in differ]
    if differ:  # keep the disagreeing cases where a person can replay them
        keep = ROOT / "build" / "fuzz" / "disagreements"
        keep.mkdir(parents=True, exist_ok=True)
        for n, _, _ in differ[:50]:
            (keep / n).write_bytes((tmp_path / n).read_bytes())
    tally.check()
