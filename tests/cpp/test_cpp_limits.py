"""Regression tests for issue 17's C++ findings, through memx-run: a --segment-len of 2^61
(a size product wrapping: segfault), a deeply nested memx.json (recursive dump: segfault), a
FIFO named memx.json (blocked forever), a token file whose shape product overflows
(std::bad_alloc), a memx.json linked outside the package, a BOM and trailing NUL bytes that
Python refuses (accepted). Each is now a typed memx error and exit status 1, within seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.cpp.test_cpp_parity import memx_run

pytestmark = pytest.mark.cpp


@pytest.fixture
def pkg(tmp_path, package_of):
    if not memx_run().is_file():
        pytest.skip(f"needs memx-run ({memx_run()} not built: run `make cpp`)")
    dst = tmp_path / "p.memx"
    shutil.copytree(package_of("rmt-tiny").path, dst)
    np.save(tmp_path / "tokens.npy", np.zeros((1, 16), dtype=np.int64))
    return dst


def _run(pkg, *args: str, tokens=None) -> subprocess.CompletedProcess:
    tokens = tokens or pkg.parent / "tokens.npy"
    return subprocess.run([str(memx_run()), str(pkg), "--tokens", str(tokens), "--quiet", *args], capture_output=True, text=True, timeout=60)


def test_a_segment_length_of_2_to_the_61_is_refused_before_allocating(pkg):
    r = _run(pkg, "--segment-len", str(1 << 61))
    assert r.returncode == 1 and "segment length (--segment-len) outside what the package allows: expected 1..32 tokens, got 2305843009213693952" in r.stderr, r.stderr


def test_a_deeply_nested_memx_json_is_a_manifest_error_not_a_crash(pkg):
    doc = json.loads((pkg / "memx.json").read_text())
    doc["config"]["deep"] = "DEEP"
    (pkg / "memx.json").write_text(json.dumps(doc).replace('"DEEP"', "[" * 100000 + "]" * 100000))
    r = _run(pkg)
    assert r.returncode == 1 and "nested too deeply: expected at most 64 levels of arrays and objects, got 100002" in r.stderr, r.stderr


def test_a_fifo_named_memx_json_is_refused_without_blocking(pkg):
    (pkg / "memx.json").unlink()
    os.mkfifo(pkg / "memx.json")
    r = _run(pkg)  # the timeout of 60 s fails the test if it blocks
    assert r.returncode == 1 and "memx.json is not a regular file: expected a regular file, got a FIFO" in r.stderr, r.stderr


def test_a_memx_json_linked_outside_the_package_is_refused(pkg, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(pkg / "memx.json", outside)
    (pkg / "memx.json").symlink_to(outside)
    r = _run(pkg)
    assert r.returncode == 1 and "memx.json is a link to a file outside the package" in r.stderr, r.stderr


@pytest.mark.parametrize("mutation, text", [(lambda raw: b"\xef\xbb\xbf" + raw, "byte-order mark"), (lambda raw: raw + b"\0\0", "a NUL byte at offset")])
def test_bytes_python_refuses_are_refused_by_memx_run_too(pkg, mutation, text):
    (pkg / "memx.json").write_bytes(mutation((pkg / "memx.json").read_bytes()))
    r = _run(pkg)
    assert r.returncode == 1 and text in r.stderr, r.stderr


def test_a_token_file_whose_shape_product_overflows_is_an_npy_error(pkg, tmp_path):
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    (tmp_path / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64)
    r = _run(pkg, tokens=tmp_path / "huge.npy")
    assert r.returncode == 1 and ".npy shape does not describe an array memx can hold" in r.stderr and "overflows" in r.stderr, r.stderr


def test_unlisted_external_data_is_refused_by_memx_run_as_by_python(pkg):
    import hashlib

    import onnx

    from memx import runtimes
    from memx.errors import PackageFileError

    doc = json.loads((pkg / "memx.json").read_text())
    graph = doc["graphs"][0]["file"]
    model = onnx.load(str(pkg / graph))
    onnx.save(model, str(pkg / graph), save_as_external_data=True, all_tensors_to_one_file=True, location="stray.bin", size_threshold=0)
    raw = (pkg / graph).read_bytes()
    doc["files"][graph] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}  # the graph re-listed, its data not
    (pkg / "memx.json").write_text(json.dumps(doc))
    r = _run(pkg, "--segment-len", "8")
    assert r.returncode == 1 and f"external data 'stray.bin' of {graph} is not listed in the manifest: expected listed in files, got unlisted" in r.stderr, r.stderr
    with pytest.raises(PackageFileError, match=f"external data 'stray.bin' of {graph} is not listed in the manifest"):
        runtimes.open(pkg)
