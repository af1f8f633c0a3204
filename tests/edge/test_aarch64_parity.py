"""The aarch64 build of libmemx and memx-run (what runs on a Jetson's CPU), run here under
qemu-user, against the x86 Python runtime: every zoo package over 256 segments, outputs and
carried state, snapshots both ways (an x86 snapshot resumes on aarch64 and the reverse); the
GMAT package with the aarch64 libmemx_ops (NEON kernel) and without it (the op's ONNX
reference body, aarch64 MLAS).

How close is close: the same ONNX Runtime release computes with different kernels on x86
(AVX2/FMA) and aarch64 (NEON), so the floats differ by rounding. Measured over 256 segments:
the carried memory within 4e-6 for every model below, logits within 1e-5 for gmat-majority,
memformer-majority, memtr-majority and infformer-majority; single logit rows of rmt-ar,
memtr-copy, rmt-reverse and infformer-sort move by up to 2.4e-4 (whole rows: near-zero logits
of those rows as much as the large ones; |logit| up to 16) while their memory stays within
4e-6, so rounding, not drift. The check is |aarch64 - x86| <= 1e-5 + 2e-5 x max |x86| of the
tensor (3.3e-4 for logits up to 16): a wrong kernel or layout is off by O(1), far outside it.

rmt-copy's recurrence amplifies any rounding difference (x86 ONNX Runtime against x86 torch:
3e-4 by 256 segments, as `memx validate rmt-copy.memx --segments 256` shows; x86 against
aarch64: 4e-3): it is checked in windows of 16 segments, each resumed on aarch64 from the x86
snapshot at its start, which is the snapshot path a Jetson deployment uses anyway.
"""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from memx import runtimes
from memx.zoo import get_zoo, zoo_entries
from tests.cpp.test_cpp_parity import BATCH, SEGMENTS, Agreement, CppRunner, assert_close, check_cpp_matches_python, python_stream, run_cpp
from tests.edge.emulation import emulator

pytestmark = pytest.mark.aarch64
CROSS_ARCH = Agreement(atol=1e-5, rtol=2e-5, same_snapshot_bytes=False)
CHAOTIC = {"rmt-copy": 16}  # zoo model -> segments per re-anchored window
ZOO = [e.name for e in zoo_entries()]


def aarch64_runner(build: Path, kernels: bool = True) -> CppRunner:
    """One ONNX Runtime thread: emulated threads that spin for work cost the other tests' CPU."""
    return CppRunner(build / "bin" / "memx-run", build / "lib" / "libmemx_ops.so" if kernels else None, emulator(), ("--threads", "1"))


@pytest.mark.parametrize("name", [n for n in ZOO if n not in CHAOTIC])
def test_aarch64_memx_run_matches_x86_python_over_256_segments(name, aarch64_build, package_of, tmp_path):
    check_cpp_matches_python(package_of(name), get_zoo(name).segment_len, aarch64_runner(aarch64_build), tmp_path, SEGMENTS,
                             seed=zlib.crc32(name.encode()), agreement=CROSS_ARCH)


def test_aarch64_memx_run_without_the_kernel_library(aarch64_build, package_of, tmp_path):
    """gmat-majority's memx.LocalGlobalAttention on its ONNX reference body."""
    check_cpp_matches_python(package_of("gmat-majority"), get_zoo("gmat-majority").segment_len, aarch64_runner(aarch64_build, kernels=False),
                             tmp_path, SEGMENTS, seed=7, agreement=CROSS_ARCH)


@pytest.mark.parametrize("name", sorted(CHAOTIC))
def test_aarch64_memx_run_matches_x86_python_in_windows_resumed_from_x86_snapshots(name, aarch64_build, package_of, tmp_path):
    pkg, seg, window = package_of(name), get_zoo(name).segment_len, CHAOTIC[name]
    rt = runtimes.open(pkg, backend="onnxruntime")
    tokens = np.random.default_rng(zlib.crc32(name.encode())).integers(0, rt.manifest.vocab_size, size=(BATCH, SEGMENTS * seg), dtype=np.int64)
    stream = rt.stream(BATCH)
    for w in range(SEGMENTS // window):
        (tmp_path / "in.snap").write_bytes(stream.snapshot())
        chunk = tokens[:, w * window * seg : (w + 1) * window * seg]
        np.save(tmp_path / "chunk.npy", chunk)
        want, stream = python_stream(rt, chunk, seg, stream=stream)
        out = tmp_path / f"w{w}"
        proc = run_cpp(pkg.path, tmp_path / "chunk.npy", seg, "--snapshot-in", str(tmp_path / "in.snap"), "--out", str(out),
                       runner=aarch64_runner(aarch64_build))
        assert proc.returncode == 0, proc.stderr
        for o in rt.manifest.outputs:
            assert_close(f"{o.name} (segments {w * window}..{(w + 1) * window - 1})", np.load(out / f"{o.name}.npy"), want[o.name], CROSS_ARCH)
        for state_name, value in stream.state.items():
            assert_close(f"state {state_name} after segment {(w + 1) * window - 1}", np.load(out / f"state.{state_name}.npy"), value, CROSS_ARCH)


def test_the_build_is_aarch64_and_memx_run_names_the_neon_kernel(aarch64_build, package_of, tmp_path):
    """Not an x86 binary by accident, and memx-run says which kernel variant the library chose."""
    for path in (aarch64_build / "bin" / "memx-run", aarch64_build / "lib" / "libmemx.so", aarch64_build / "lib" / "libmemx_ops.so"):
        head = path.read_bytes()[:20]
        machine = int.from_bytes(head[18:20], "little")
        assert head[:4] == b"\x7fELF" and machine == 183, f"{path}: expected an aarch64 ELF (e_machine 183), got e_machine {machine}"
    np.save(tmp_path / "t.npy", np.zeros((1, 32), dtype=np.int64))
    proc = subprocess.run([*emulator(), str(aarch64_build / "bin" / "memx-run"), str(package_of("gmat-majority").path), "--tokens", str(tmp_path / "t.npy"),
                           "--ops-lib", str(aarch64_build / "lib" / "libmemx_ops.so")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "memx ops: kernel (libmemx_ops.so, neon)" in proc.stdout, proc.stdout
