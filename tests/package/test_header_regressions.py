"""Regression tests for issue 17's forged-snapshot and manifest-edit findings, each named after
what it got wrong; the shared corpora (tests/data) hold the C++ reader to the same verdicts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from memx import runtimes
from memx.errors import ManifestError, SnapshotCorruptError
from memx.package import Package, snapshot as snap
from tests.data.snapshots import make_corpus


def _forged(edit) -> bytes:
    return make_corpus.edit_header(make_corpus.encoded(), edit)


def _refused(blob: bytes, match: str) -> None:
    with pytest.raises(SnapshotCorruptError, match=match):
        snap.decode(blob)


@pytest.mark.parametrize("segments", [-1, 7.5, 1 << 63])
def test_a_forged_snapshot_with_a_negative_fractional_or_2_to_the_63_segment_count_is_refused(segments):
    _refused(_forged(make_corpus.setter(("segments",), segments)), r"field 'segments' is out of range: expected an integer in 0\.\.9223372036854775807")


def test_pending_reset_no_is_not_read_as_true():
    _refused(_forged(make_corpus.setter(("pending_reset",), ["no", "no"])), r"'pending_reset' is malformed: expected a list of 2 booleans, got \[\"no\", \"no\"\]")


def test_a_forged_snapshot_with_negative_dims_is_refused():
    _refused(_forged(make_corpus.setter(("tensors", 0, "shape"), [2, -4, -8])), r"'tensors\[0\]\.shape' is out of range: expected an integer in 0\.\.")


def test_a_forged_snapshot_whose_tensors_leave_bytes_over_is_refused():
    good = make_corpus.encoded()
    _refused(make_corpus.reseal(good[:-32] + bytes(8)), r"payload length differs from its tensors': expected 272 bytes, got 280 bytes")


def test_an_honest_snapshot_still_round_trips():
    blob = make_corpus.encoded()
    data = snap.decode(blob)
    assert data.segments == 7 and data.pending_reset.tolist() == [False, True] and snap.encode(data) == blob


def _edited_copy(tmp_path, package_of, edit) -> Package:
    src = package_of("rmt-tiny").path
    dst = tmp_path / "pkg"
    shutil.copytree(src, dst)
    doc = json.loads((dst / "memx.json").read_text())
    edit(doc)
    (dst / "memx.json").write_text(json.dumps(doc))
    return dst


@pytest.mark.parametrize("axis", [2, 0, None])
def test_a_manifest_edit_of_segment_axis_is_refused_before_a_pool_slices_the_wrong_axis(tmp_path, package_of, axis):
    path = _edited_copy(tmp_path, package_of, lambda d: d["outputs"][0].__setitem__("segment_axis", axis))
    with pytest.raises(ManifestError, match=r"outputs\[0\]\.segment_axis does not point at the output's segment dim: expected 1"):
        Package.open(path)
    with pytest.raises(ManifestError):
        runtimes.open(path)


def test_the_unedited_copy_opens_and_pools_cut_along_the_segment(tmp_path, package_of):
    path = _edited_copy(tmp_path, package_of, lambda d: None)
    pool = runtimes.open(path).pool(2)
    a, b = pool.open(), pool.open()
    out = pool.step({a: np.arange(5), b: np.arange(3)})
    assert out[a]["logits"].shape[0] == 5 and out[b]["logits"].shape[0] == 3
