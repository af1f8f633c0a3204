"""The shared snapshot corpus (tests/data/snapshots/): every snapshot gets the verdict it
records when restored into a stream of the corpus's model, schema and batch, the one the C++
reader must give too (cpp/runtime/tests/test_corpus.cc); valid ones re-encode to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memx.errors import MemxError
from memx.package import snapshot as snap
from tests.data.snapshots import make_corpus

HERE = Path(__file__).resolve().parents[1] / "data" / "snapshots"
CORPUS = json.loads((HERE / "corpus.json").read_text(encoding="utf-8"))
SCHEMA = {name: (tuple(s["shape"]), s["dtype"]) for name, s in CORPUS["schema"].items()}


def restore(case: dict[str, Any]) -> tuple[str, snap.SnapshotData | None]:
    blob = (HERE / case["file"]).read_bytes()
    try:
        data = snap.decode_checked(blob, model_id=CORPUS["model_id"], batch=case.get("batch", CORPUS["batch"]), schema=SCHEMA)
    except MemxError as e:
        return type(e).__name__, None
    return "ok", data


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["name"] for c in CORPUS["cases"]])
def test_python_reader_gives_the_recorded_verdict(case):
    got, data = restore(case)
    assert got == case["verdict"], f"{case['name']}: {got}"
    if data is not None:
        assert data.segments == case["segments"] and data.pending_reset.tolist() == case["pending_reset"]
        if case.get("canonical", True):  # as memx writes it (not hand-edited): the encoder is deterministic
            assert snap.encode(data) == (HERE / case["file"]).read_bytes()
        for name, total in case.get("sums", {}).items():
            assert np.isclose(data.states[name].astype(np.float64).sum(), total)


def test_the_corpus_files_are_what_the_generator_writes():
    assert make_corpus.main(["--check"]) == 0, "run: python -m tests.data.snapshots.make_corpus"


def test_the_corpus_covers_every_snapshot_error():
    verdicts = {c["verdict"] for c in CORPUS["cases"]}
    assert verdicts == {"ok", "SnapshotCorruptError", "SnapshotMismatchError", "NonFiniteStateError"}
    assert sum(c["verdict"] != "ok" for c in CORPUS["cases"]) >= 15
