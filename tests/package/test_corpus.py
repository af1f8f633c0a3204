"""The shared manifest corpus (tests/data/manifests/corpus.json): every case gets the verdict
it records, the one the C++ reader must give too (cpp/runtime/tests/test_corpus.cc)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from memx.errors import MemxError
from memx.package.manifest import Manifest

CORPUS = json.loads((Path(__file__).resolve().parents[1] / "data" / "manifests" / "corpus.json").read_text(encoding="utf-8"))


def case_text(case: dict[str, Any]) -> str:
    """The manifest text of one case: raw, or the base with its edits applied."""
    if "raw" in case:
        return case["raw"]
    doc = copy.deepcopy(CORPUS["base"])

    def parent(path: list):
        node = doc
        for key in path[:-1]:
            node = node[key]
        return node, path[-1]

    for path, value in case.get("set", []):
        node, key = parent(path)
        node[key] = value
    for path in case.get("delete", []):
        node, key = parent(path)
        del node[key]
    for path, value in case.get("append", []):
        node, key = parent(path)
        node[key].append(value)
    return json.dumps(doc)


def verdict(text: str) -> tuple[str, str | None]:
    try:
        m = Manifest.from_json(text)
    except MemxError as e:
        return type(e).__name__, None
    return "ok", m.model_id()


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["name"] for c in CORPUS["cases"]])
def test_python_reader_gives_the_recorded_verdict(case):
    got, model_id = verdict(case_text(case))
    assert got == case["verdict"], f"{case['name']}: {got}"
    if "model_id" in case:
        assert model_id == case["model_id"]


def test_edits_change_the_model_id_and_the_corpus_covers_both_verdicts():
    ids = {c["name"]: verdict(case_text(c))[1] for c in CORPUS["cases"] if c["verdict"] == "ok"}
    same = {c["name"] for c in CORPUS["cases"] if c.get("same_id_as_valid")}  # segment limits are not what snapshots bind to
    assert {ids[n] for n in same} <= {ids["valid"]}
    ids = {n: i for n, i in ids.items() if n not in same}
    extra = {n for n in ids if n.startswith("extra-input")}  # extra step inputs are not what snapshots bind to
    assert len(extra) >= 3 and {ids[n] for n in extra} == {ids["valid"]}
    ids = {n: i for n, i in ids.items() if n not in extra}
    assert len(set(ids.values())) == len(ids) - 1 >= 3  # config and weights are part of the identity
    assert ids["model-id-absent-read-as-before"] == ids["valid"]  # an older manifest without the stored id: computed alike
    assert sum(c["verdict"] != "ok" for c in CORPUS["cases"]) >= 15


def test_written_manifests_carry_the_id_and_an_edit_after_export_is_refused():
    m = Manifest.from_json(case_text(CORPUS["cases"][0]))
    written = json.loads(m.to_json())
    assert written["model_id"] == m.model_id() == CORPUS["cases"][0]["model_id"]
    written["config"]["d_model"] = 64
    with pytest.raises(MemxError, match=r"model_id does not match .*expected [0-9a-f]{16}.*re-export"):
        Manifest.from_dict(written)
