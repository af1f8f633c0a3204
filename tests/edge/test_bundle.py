"""`memx bundle`: the directory a user takes to their board, and its run.sh.

run.sh is run here twice: the prebuilt aarch64 binaries under qemu-user (MEMX_BUNDLE_EMULATOR; needs
`make cpp-aarch64`), and the build from the bundled sources against the x86 ONNX Runtime of
.deps/onnxruntime (proves the sources are complete). Both write their outputs, which must match the
x86 Python runtime. A stand-in tegrastats on PATH checks the statistics run.sh prints.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memx import runtimes
from memx.cli import app
from memx.edge import BUNDLE_FILE, TARGETS, bundle, check_bundle, find_cpp_sources
from memx.errors import BackendUnavailableError, PackageExistsError, RegistryError
from tests.edge.emulation import QEMU, emulator

ROOT = Path(__file__).resolve().parents[2]
PREBUILT = ROOT / "build" / "aarch64" / "install"
ORT = ROOT / ".deps" / "onnxruntime"
SEGMENTS = 8  # sample segments: emulated steps are slow
TOL = 1e-5
CPU_ROW = re.compile(r"^cpu\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+)\s+ok$", re.M)

# A stand-in for Jetson's tegrastats: JetPack 6 (Orin) lines every --interval ms.
FAKE_TEGRASTATS = """#!/bin/sh
i=0
while :; do
  i=$((i + 1))
  echo "12-06-2025 10:00:00 RAM $((2800 + i))/30536MB (lfb 6521x4MB) SWAP 0/15268MB (cached 0MB) CPU [3%@729,1%@729,off,off] EMC_FREQ 0% GR3D_FREQ $((i % 2 * 40))%@[305,305] cpu@45.5C VDD_GPU_SOC $((1500 + i))mW/1593mW VIN_SYS_5V0 2421mW/2421mW"
  sleep 0.5
done
"""


@pytest.fixture(scope="module")
def gmat(package_of):
    return package_of("gmat-tiny")  # GMAT: the custom op memx.LocalGlobalAttention


@pytest.fixture(scope="module")
def bundled(gmat, tmp_path_factory) -> Path:
    """One bundle of gmat-tiny, with the prebuilt aarch64 binaries when they are built."""
    out = tmp_path_factory.mktemp("bundle") / "gmat-jetson"
    bundle(gmat.path, target="jetson", out=out, segments=SEGMENTS, prebuilt=PREBUILT if (PREBUILT / "bin" / "memx-run").is_file() else False)
    return out


def run_sh(bundle_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("ONNXRUNTIME_ROOT", "MEMX_BUNDLE_EMULATOR", "MEMX_BUNDLE_BUILD_DIR")}
    return subprocess.run(["bash", str(bundle_dir / "run.sh"), *args], capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})})


def assert_matches_python(pkg, bundle_dir: Path, outputs: Path) -> None:
    """memx-run's outputs and final state (--save-outputs) against the x86 Python runtime on the same tokens."""
    rt = runtimes.open(pkg.path, backend="onnxruntime")
    tokens = np.load(bundle_dir / "sample" / "tokens.npy")
    seg = int(pkg.manifest.segment["max"])
    stream = rt.stream(tokens.shape[0])
    want: dict[str, list[np.ndarray]] = {o.name: [] for o in rt.manifest.outputs}
    for start in range(0, tokens.shape[1], seg):
        for name, value in stream.step(tokens[:, start : start + seg]).items():
            want[name].append(value)
    for name, values in want.items():
        got = np.load(outputs / f"{name}.npy")
        assert got.shape == (SEGMENTS, *values[0].shape) and got.dtype == values[0].dtype
        err = float(np.abs(got.astype(np.float64) - np.stack(values)).max())
        assert err <= TOL, f"{name}: max |bundle - Python| = {err:.3g}"
    for name, value in stream.state.items():
        err = float(np.abs(np.load(outputs / f"state.{name}.npy") - value).max())
        assert err <= TOL, f"state {name}: max |bundle - Python| = {err:.3g}"


def fake_tegrastats(tmp_path: Path) -> str:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "tegrastats").write_text(FAKE_TEGRASTATS)
    (bin_dir / "tegrastats").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


# --- what is inside -------------------------------------------------------------------------------
def test_bundle_holds_package_sources_sample_and_hashes_that_match(bundled, gmat):
    data = json.loads((bundled / BUNDLE_FILE).read_text())
    assert data["format"] == "memx.bundle" and data["target"] == "jetson" and data["memx"] == __import__("memx").__version__
    assert data["package"]["model_id"] == gmat.manifest.model_id() and data["package"]["custom_ops"] == ["memx.LocalGlobalAttention"]
    assert check_bundle(bundled) == []
    listed = {p: info for p, info in data["files"].items()}
    on_disk = {p.relative_to(bundled).as_posix() for p in bundled.rglob("*") if (p.is_file() or p.is_symlink()) and p.name != BUNDLE_FILE}
    assert set(listed) == on_disk
    for rel in ("run.sh", "README.md", "bundle.env", "sample/tokens.npy", f"{data['package']['dir']}/memx.json", "cpp/runtime/CMakeLists.txt",
                "cpp/runtime/tools/memx_run.cc", "cpp/ops/CMakeLists.txt", "cpp/ops/local_global_attention.cc"):
        assert rel in listed, rel
    assert not any(p.startswith("cpp/runtime/tests/") for p in listed)
    if (ROOT / ".deps" / "nlohmann" / "usr" / "include" / "nlohmann" / "json.hpp").is_file():
        assert "deps/nlohmann/usr/include/nlohmann/json.hpp" in listed  # the board needs no apt for it
    tokens = np.load(bundled / "sample" / "tokens.npy")
    assert tokens.dtype == np.int64 and tokens.shape == (1, SEGMENTS * gmat.manifest.segment["max"])
    assert 0 <= tokens.min() and tokens.max() < gmat.manifest.vocab_size
    assert os.access(bundled / "run.sh", os.X_OK)
    assert subprocess.run(["bash", "-n", str(bundled / "run.sh")]).returncode == 0
    readme = (bundled / "README.md").read_text()
    assert "./run.sh" in readme and "MEMX_BUNDLE_EMULATOR" in readme and not re.search(r"\$[a-z_]{3,}", readme)
    # altering a file is seen
    original = (bundled / "README.md").read_bytes()
    try:
        (bundled / "README.md").write_bytes(original + b"\n")
        assert check_bundle(bundled) == ["README.md: content differs"]
    finally:
        (bundled / "README.md").write_bytes(original)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_run_sh_is_shellcheck_clean():
    done = subprocess.run(["shellcheck", str(ROOT / "memx" / "edge" / "templates" / "run.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_target_bundles(name, gmat, tmp_path):
    spec = TARGETS.get(name)
    assert set(spec.devices) <= {"tensorrt", "cuda", "cpu"} and spec.devices[-1] == "cpu"
    result = bundle(gmat.path, target=name, out=tmp_path / "b", prebuilt=False, segments=1)
    data = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    assert data["target"] == name and data["arch"] == spec.arch and data["prebuilt"] is None
    assert result.prebuilt is None and any("no prebuilt" in n for n in result.notes)
    assert f"BUNDLE_DEVICES='{' '.join(spec.devices)}'" in (tmp_path / "b" / "bundle.env").read_text()


# --- run.sh -----------------------------------------------------------------------------------------
def test_run_sh_runs_the_prebuilt_aarch64_binaries_under_emulation_and_matches_python(bundled, gmat, tmp_path):
    if not (PREBUILT / "bin" / "memx-run").is_file():
        pytest.skip(f"needs the aarch64 build ({PREBUILT / 'bin' / 'memx-run'} absent: run `make cpp-aarch64`)")
    if not QEMU.is_file():
        pytest.skip(f"needs qemu-user ({QEMU} absent: `make cpp-aarch64` fetches it)")
    if os.uname().machine == "aarch64":
        pytest.skip("the host is aarch64: the emulator path is for other hosts")
    results = tmp_path / "results"
    done = run_sh(bundled, "--save-outputs", "--out", str(results), "--threads", "1",
                  env={"MEMX_BUNDLE_EMULATOR": " ".join(emulator()), "PATH": fake_tegrastats(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert CPU_ROW.search(done.stdout), done.stdout
    assert "through" in done.stdout and "skipped: the prebuilt ONNX Runtime is CPU-only" in done.stdout
    # the stand-in tegrastats' fields, summarised
    assert re.search(r"GPU load GR3D_FREQ \(%\)\s+min\s+0\.0\s+max\s+40\.0", done.stdout), done.stdout
    assert "RAM used (MB)" in done.stdout and "VDD_GPU_SOC (mW)" in done.stdout and "VIN_SYS_5V0 (mW)" in done.stdout
    report = json.loads((results / "cpu.json").read_text())
    assert report["format"] == "memx.run" and report["steps"] == SEGMENTS and report["custom_ops"].startswith("kernel")
    assert_matches_python(gmat, bundled, results / "cpu")


def test_run_sh_builds_the_bundled_sources_natively_and_matches_python(bundled, gmat, tmp_path):
    if not (ORT / "lib").is_dir() or not (ORT / "include" / "onnxruntime_cxx_api.h").is_file():
        pytest.skip(f"needs an x86 ONNX Runtime with headers ({ORT}: `make cpp` makes it)")
    if shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    results = tmp_path / "results"
    done = run_sh(bundled, "--save-outputs", "--out", str(results), "--jobs", "2", "--build",
                  env={"ONNXRUNTIME_ROOT": str(ORT), "MEMX_BUNDLE_BUILD_DIR": str(tmp_path / "build")}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "built here against ONNXRUNTIME_ROOT" in done.stdout and CPU_ROW.search(done.stdout), done.stdout
    assert (tmp_path / "build" / "ops" / "lib" / "libmemx_ops.so").is_file() and not (tmp_path / "build" / "runtime" / "memx_tests").exists()
    assert "tegrastats not found" in done.stdout or shutil.which("tegrastats")
    assert re.search(r"^tensorrt .*not available in this ONNX Runtime$", done.stdout, re.M), done.stdout
    assert json.loads((results / "cpu.json").read_text())["custom_ops"].startswith("kernel")
    assert_matches_python(gmat, bundled, results / "cpu")


def test_run_sh_says_what_it_expected_when_it_cannot_run(bundled, gmat, tmp_path):
    bad = run_sh(bundled, "--device", "gpu")
    assert bad.returncode == 1 and "unknown device 'gpu': expected tensorrt, cuda or cpu" in bad.stderr
    bad = run_sh(bundled, "--bogus")
    assert bad.returncode == 1 and "unknown option '--bogus'" in bad.stderr
    bad = run_sh(bundled, "--build", env={"ONNXRUNTIME_ROOT": str(tmp_path / "nowhere")})
    assert bad.returncode == 1 and f"ONNXRUNTIME_ROOT={tmp_path / 'nowhere'}: expected an ONNX Runtime prefix" in bad.stderr
    (tmp_path / "ort" / "lib").mkdir(parents=True)
    bad = run_sh(bundled, "--build", env={"ONNXRUNTIME_ROOT": str(tmp_path / "ort")})
    assert bad.returncode == 1 and "expected lib/libonnxruntime.so*" in bad.stderr
    api = json.loads((bundled / BUNDLE_FILE).read_text())["sources"]["onnxruntime_headers_api"]
    if api:  # a library without headers gets the bundled ones, if it is not older than they are
        (tmp_path / "ort" / "lib" / "libonnxruntime.so.1.1.0").write_bytes(b"")
        bad = run_sh(bundled, "--build", env={"ONNXRUNTIME_ROOT": str(tmp_path / "ort"), "MEMX_BUNDLE_BUILD_DIR": str(tmp_path / "b")})
        assert bad.returncode == 1 and f"ONNX Runtime 1.1.0 is older than the bundled headers (API {api}" in bad.stderr
    bare = bundle(gmat.path, out=tmp_path / "bare", prebuilt=False, segments=1).path
    bad = run_sh(bare, "--prebuilt")
    assert bad.returncode == 1 and "this bundle has no prebuilt binaries" in bad.stderr and "ONNXRUNTIME_ROOT" in bad.stderr
    if os.uname().machine != "aarch64" and (bundled / "prebuilt").is_dir():
        bad = run_sh(bundled, "--prebuilt")
        assert bad.returncode == 1 and "the prebuilt binaries are for aarch64, this host is" in bad.stderr and "MEMX_BUNDLE_EMULATOR" in bad.stderr


# --- bad input -----------------------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, dict]:
    done = CliRunner().invoke(app, ["bundle", *args, "--json"])
    return done.exit_code, json.loads(done.stdout)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name)


def test_not_a_package_and_an_unknown_target_are_refused_with_what_was_expected(gmat, tmp_path):
    (tmp_path / "empty").mkdir()
    code, data = _cli(str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and data["error"]["type"] == "ManifestError" and "memx.json" in data["error"]["expected"]
    code, data = _cli(str(tmp_path / "missing.memx"))
    assert code == 2 and data["error"]["type"] == "PackageFileError" and "missing.memx" in data["error"]["actual"]
    code, data = _cli(str(gmat.path), "--target", "jetsn", "--out", str(tmp_path / "o"))
    assert code == 2 and data["error"]["type"] == "RegistryError" and "jetson" in data["error"]["expected"]
    assert "did you mean 'jetson'" in data["error"]["text"]
    with pytest.raises(RegistryError, match="unknown bundle target 'orin'"):
        bundle(gmat.path, target="orin", out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_an_existing_output_is_refused_untouched_and_force_replaces_only_a_bundle(gmat, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, data = _cli(str(gmat.path), "--out", str(out), "--no-prebuilt")
    assert code == 2 and data["error"]["type"] == "PackageExistsError" and "keep.txt" in data["error"]["actual"]
    with pytest.raises(PackageExistsError, match="--force replaces only a memx bundle"):
        bundle(gmat.path, out=out, force=True, prebuilt=False)
    assert sorted(os.listdir(out)) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine" and _leftovers(tmp_path) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    bundle(gmat.path, out=empty, prebuilt=False, segments=1)  # an empty directory is fine
    first = json.loads((empty / BUNDLE_FILE).read_text())["created"]
    with pytest.raises(PackageExistsError, match="not empty"):
        bundle(gmat.path, out=empty, prebuilt=False, segments=1)
    (empty / "stale.txt").write_text("from the earlier bundle")
    bundle(gmat.path, out=empty, prebuilt=False, segments=2, force=True)  # an earlier bundle: replaced whole
    assert not (empty / "stale.txt").exists() and check_bundle(empty) == [] and json.loads((empty / BUNDLE_FILE).read_text())["created"] >= first
    assert _leftovers(tmp_path) == []


def test_a_failure_midway_leaves_nothing(gmat, tmp_path, monkeypatch):
    mod = importlib.import_module("memx.edge.bundle")  # the module (memx.edge.bundle the name is the function)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mod, "_write_sample", boom)
    with pytest.raises(OSError, match="No space left"):
        bundle(gmat.path, out=tmp_path / "o", prebuilt=False)
    assert sorted(os.listdir(tmp_path)) == []


def test_tar_writes_one_archive_of_the_same_bundle(gmat, tmp_path):
    code, data = _cli(str(gmat.path), "--out", str(tmp_path / "g"), "--tar", "--no-prebuilt", "--segments", "1")
    archive = tmp_path / "g.tar.gz"
    assert code == 0 and data["path"] == str(archive) and data["archive"] and data["prebuilt"] is None
    assert data["commands"][-1] == "./run.sh" and any("tar xzf g.tar.gz" in c for c in data["commands"])
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="tar")
    assert check_bundle(tmp_path / "x" / "g") == [] and os.access(tmp_path / "x" / "g" / "run.sh", os.X_OK)
    code, data = _cli(str(gmat.path), "--out", str(tmp_path / "g"), "--tar", "--no-prebuilt")
    assert code == 2 and data["error"]["type"] == "PackageExistsError"
    code, _ = _cli(str(gmat.path), "--out", str(tmp_path / "g"), "--tar", "--no-prebuilt", "--force", "--segments", "1")
    assert code == 0 and sorted(os.listdir(tmp_path)) == ["g.tar.gz", "x"]


def test_prebuilt_binaries_must_be_for_the_board(gmat, tmp_path):
    fake = tmp_path / "x86" / "bin"
    fake.mkdir(parents=True)
    (tmp_path / "x86" / "lib").mkdir()
    shutil.copy(shutil.which("true") or "/bin/true", fake / "memx-run")
    with pytest.raises(BackendUnavailableError, match="not built for jetson") as info:
        bundle(gmat.path, out=tmp_path / "o", prebuilt=tmp_path / "x86")
    assert "machine 183" in str(info.value.expected)
    with pytest.raises(BackendUnavailableError, match="prebuilt binaries not found"):
        bundle(gmat.path, out=tmp_path / "o", prebuilt=tmp_path / "nowhere")
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_the_summary_says_when_prebuilt_binaries_are_absent(gmat, tmp_path):
    done = CliRunner().invoke(app, ["bundle", str(gmat.path), "--out", str(tmp_path / "o"), "--no-prebuilt", "--segments", "1"])
    assert done.exit_code == 0 and "without prebuilt binaries (absent" in done.output


# --- wheels: the sources installed by cpp/ops/bundle_sources.cmake ---------------------------------------
def test_a_wheel_install_finds_the_sources_bundle_sources_cmake_installs(gmat, tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    project = tmp_path / "skb"
    project.mkdir()
    headers = ORT / "include"
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(wheel NONE)\nset(SKBUILD 2)\n"
        f'set(ONNXRUNTIME_INCLUDE_DIR "{headers}")\ninclude("{ROOT / "cpp" / "ops" / "bundle_sources.cmake"}")\n')
    for cmd in (["cmake", "-S", str(project), "-B", str(project / "b")], ["cmake", "--install", str(project / "b"), "--prefix", str(tmp_path / "site")]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    cpp = tmp_path / "site" / "memx" / "edge" / "cpp"
    sources = find_cpp_sources([(tmp_path / "no-checkout" / "cpp", tmp_path / "no-checkout" / ".deps", "checkout"), (cpp, cpp / "deps", "installed")])
    assert sources.origin == "installed" and sources.runtime == cpp / "runtime" and not (cpp / "runtime" / "tests").exists()
    assert (sources.ort_headers is not None) == (headers / "onnxruntime_cxx_api.h").is_file()
    result = bundle(gmat.path, out=tmp_path / "o", prebuilt=False, segments=1, sources=sources)
    checkout = bundle(gmat.path, out=tmp_path / "c", prebuilt=False, segments=1)
    cpp_files = {p: i for p, i in json.loads((result.path / BUNDLE_FILE).read_text())["files"].items() if p.startswith(("cpp/", "deps/"))}
    checkout_files = {p: i for p, i in json.loads((checkout.path / BUNDLE_FILE).read_text())["files"].items() if p.startswith(("cpp/", "deps/"))}
    assert result.sources == "installed" and cpp_files == checkout_files
    with pytest.raises(BackendUnavailableError, match="C\\+\\+ sources of libmemx are not in this memx install"):
        find_cpp_sources([(tmp_path / "none", tmp_path / "none", "checkout")])
