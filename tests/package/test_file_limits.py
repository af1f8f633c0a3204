"""Regression tests for issue 17's package-file findings: a FIFO named memx.json (the reader
blocked), a deeply nested manifest (RecursionError), a memx.json linked to a file outside the
package (accepted), bytes that are not UTF-8 (UnicodeDecodeError), a deeply nested snapshot
header."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading

import pytest

from memx.errors import ManifestError, SnapshotCorruptError, UnsafePathError
from memx.package import snapshot as snap
from memx.package.files import Package


@pytest.fixture
def copy(tmp_path, package_of):
    dst = tmp_path / "p.memx"
    shutil.copytree(package_of("rmt-tiny").path, dst)
    return dst


def _opens_within(path, seconds: float = 20.0):
    """Package.open(path) in a thread: (raised error or None, whether it returned in time)."""
    box: dict = {}

    def run():
        try:
            Package.open(path)
            box["error"] = None
        except Exception as e:  # noqa: BLE001 - the test looks at the type
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return box.get("error"), not t.is_alive()


def test_a_fifo_named_memx_json_is_refused_without_blocking(copy):
    (copy / "memx.json").unlink()
    os.mkfifo(copy / "memx.json")
    error, returned = _opens_within(copy)
    assert returned, "Package.open blocked on a FIFO"
    assert isinstance(error, ManifestError) and "memx.json is not a regular file: expected a regular file, got a FIFO" in str(error)


def test_a_directory_named_memx_json_is_refused(copy):
    (copy / "memx.json").unlink()
    (copy / "memx.json").mkdir()
    with pytest.raises(ManifestError, match="not a regular file.*a directory"):
        Package.open(copy)


def test_a_deeply_nested_manifest_is_a_manifest_error_not_a_recursion_error(copy):
    doc = json.loads((copy / "memx.json").read_text())
    doc["config"]["deep"] = "DEEP"
    (copy / "memx.json").write_text(json.dumps(doc).replace('"DEEP"', "[" * 5000 + "]" * 5000))
    with pytest.raises(ManifestError, match=r"nested too deeply: expected at most 64 levels of arrays and objects, got 5002"):
        Package.open(copy)


def test_a_memx_json_linked_outside_the_package_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(copy / "memx.json", outside)
    (copy / "memx.json").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="memx.json is a link to a file outside the package"):
        Package.open(copy)


def test_a_memx_json_that_is_not_utf8_is_a_manifest_error(copy):
    raw = (copy / "memx.json").read_bytes()
    (copy / "memx.json").write_bytes(raw[:10] + b"\xff\xfe" + raw[10:])
    with pytest.raises(ManifestError, match=r"memx.json is not UTF-8 text: expected UTF-8, got byte 0xff at offset 10"):
        Package.open(copy)


def test_a_deeply_nested_snapshot_header_is_corrupt_not_a_recursion_error():
    header = ("[" * 3000 + "]" * 3000).encode()
    body = struct.pack("<8sHI", snap.MAGIC, snap.VERSION, len(header)) + header
    blob = body + hashlib.sha256(body).digest()
    with pytest.raises(SnapshotCorruptError, match="snapshot header is nested too deeply"):
        snap.decode(blob)
