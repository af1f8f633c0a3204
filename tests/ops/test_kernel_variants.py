"""libmemx_ops carries two builds of the kernel (portable loops, AVX2/FMA) and picks one at run
time: both must give the reference's answer, and the portable one must be reachable on a CPU
that has AVX2 (MEMX_OPS_KERNEL=portable), or nobody would ever run it before a user does.

memx-ops-check (cpp/ops/tests/kernel_check.cc, built by `make ops`) runs every compiled variant
side by side without ONNX Runtime on cases written here; tests/edge runs its aarch64 build (NEON)
under qemu on the same cases (write_check_cases, run_check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "build" / "ops" / "memx-ops-check"
TOL = 1e-5
SCRIPT = """
import sys, numpy as np, torch
from tests.ops.test_custom_op import CONFIGS, _case, _ort, _single_op_model
from memx.ops.library import describe_library, find_library
out = {"describe": np.array(describe_library(find_library()))}
for n, (pattern, window, causal, memory) in enumerate(CONFIGS):
    model = _single_op_model(pattern, window, causal, memory > 0, 8)
    rng = np.random.default_rng([n, window, memory])
    for i in range(3):
        q, k, v, lengths, mem = _case(rng, memory=memory)
        feeds = dict(zip(["q", "k", "v", "lengths", "mem_k", "mem_v"], (q, k, v, lengths, *mem)))
        t = [torch.from_numpy(a) for a in (q, k, v, lengths, *mem)]
        out[f"{n}-{i}-ref"] = torch.ops.memx.local_global_attention(t[0], t[1], t[2], t[3], t[4] if mem else None, t[5] if mem else None, pattern, window, causal).numpy()
        out[f"{n}-{i}-kernel"] = _ort(model, feeds, kernel=True)
np.savez(sys.argv[1], **out)
"""


def _kernel_outputs(tmp_path: Path, variant: str | None) -> dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k != "MEMX_OPS_KERNEL"}
    if variant:
        env["MEMX_OPS_KERNEL"] = variant
    target = tmp_path / f"{variant or 'auto'}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(target)], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, check=True, timeout=300)
    with np.load(target) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.kernels
def test_portable_and_dispatched_kernels_both_equal_the_reference(tmp_path):
    auto, portable = _kernel_outputs(tmp_path, None), _kernel_outputs(tmp_path, "portable")
    assert str(portable["describe"]).endswith("kernel portable)")
    if os.uname().machine == "x86_64" and "avx2" in Path("/proc/cpuinfo").read_text():
        assert str(auto["describe"]).endswith("kernel avx2+fma)")
    cases = sorted(k[: -len("-ref")] for k in auto if k.endswith("-ref"))
    assert len(cases) == 30
    for case in cases:
        for outputs in (auto, portable):
            np.testing.assert_allclose(outputs[f"{case}-kernel"], outputs[f"{case}-ref"], atol=1e-5, rtol=0, err_msg=case)
        np.testing.assert_allclose(portable[f"{case}-kernel"], auto[f"{case}-kernel"], atol=1e-5, rtol=0, err_msg=case)


def write_check_cases(directory: Path) -> list[str]:
    """memx-ops-check's cases (DIR/cases.txt plus raw little-endian arrays, torch's reference output
    as NAME.expected.bin): the 30 of SCRIPT (CONFIGS x 3 at D = 8, same seeds), then CONFIGS at
    D = 16 and 40 (the SIMD value blocks and their scalar tail) and two longer rows (S = 300,
    window 64, M = 16, D = 64)."""
    import torch

    from tests.ops.test_custom_op import CONFIGS, _case

    def reference(case, pattern, window, causal):
        q, k, v, lengths, mem = case
        t = [torch.from_numpy(a) for a in (q, k, v, lengths, *mem)]
        return torch.ops.memx.local_global_attention(t[0], t[1], t[2], t[3], t[4] if mem else None, t[5] if mem else None, pattern, window, causal).numpy()

    cases = []  # (name, pattern, window, causal, memory, (q, k, v, lengths, mem))
    for n, (pattern, window, causal, memory) in enumerate(CONFIGS):
        rng = np.random.default_rng([n, window, memory])
        cases += [(f"{n}-{i}", pattern, window, causal, memory, _case(rng, memory=memory)) for i in range(3)]
    for n, (pattern, window, causal, memory) in enumerate(CONFIGS):
        for dim in (16, 40):
            cases.append((f"{n}-d{dim}", pattern, window, causal, memory, _case(np.random.default_rng([n, dim]), memory=memory, dim=dim)))
    rng = np.random.default_rng(2048)
    for pattern, causal in (("band", False), ("chunked", True)):
        q, k, v = (rng.standard_normal((1, 2, 300, 64)).astype(np.float32) for _ in range(3))
        mem = [rng.standard_normal((1, 2, 16, 64)).astype(np.float32) for _ in range(2)]
        cases.append((f"long-{pattern}", pattern, 64, causal, 16, (q, k, v, np.array([290], np.int64), mem)))

    directory.mkdir(parents=True, exist_ok=True)
    lines = ["# memx-ops-check cases: tests/ops/test_kernel_variants.py"]
    for name, pattern, window, causal, memory, case in cases:
        q, k, v, lengths, mem = case
        b, h, s, d = q.shape
        lines.append(f"case {name} pattern={pattern} window={window} causal={int(causal)} batch={b} heads={h} seq={s} dim={d} memory={memory}")
        arrays = {"q": q, "k": k, "v": v, "lengths": lengths, "expected": reference(case, pattern, window, causal), **dict(zip(("mem_k", "mem_v"), mem))}
        for key, a in arrays.items():
            np.ascontiguousarray(a, dtype="<i8" if key == "lengths" else "<f4").tofile(directory / f"{name}.{key}.bin")
    (directory / "cases.txt").write_text("\n".join(lines) + "\n")
    return [c[0] for c in cases]


def run_check(command: Sequence[str], directory: Path) -> dict:
    """memx-ops-check (command: the binary, or an emulator line ending in it) on directory: its JSON."""
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command[-1]} exited {out.returncode}: {out.stderr}"
    return json.loads(out.stdout)


def assert_check_report(report: dict, names: list[str], arch: str, simd: str) -> None:
    """Every case ran; every variant is within TOL of the reference and of the baseline."""
    assert report["arch"] == arch
    assert [v["variant"] for v in report["variants"]] == [simd, "baseline"], report["variants"]
    assert [c["name"] for c in report["cases"]] == names
    for case in report["cases"]:
        for variant in (simd, "baseline"):
            err = case["max_abs_err"][variant]
            assert err is not None and err <= TOL, f"case {case['name']}: {variant} vs torch's reference: max abs error {err} > {TOL}"
        diff = case["max_abs_diff_vs_baseline"][simd]
        assert diff is not None and diff <= TOL, f"case {case['name']}: {simd} vs baseline: max abs difference {diff} > {TOL}"


def assert_refuses_truncated_input(command: Sequence[str], directory: Path) -> None:
    """One array a float short: exit 2 and a SizeMismatch line naming the expected and actual sizes."""
    victim = directory / "3-1.q.bin"
    size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[:-4])
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stdout == ""
    assert "memx-ops-check: SizeMismatch: 3-1.q.bin" in out.stderr, out.stderr
    assert f"expected {size} bytes (float32 [" in out.stderr and f"got {size - 4} bytes" in out.stderr, out.stderr


def _native_harness() -> Path:
    if not HARNESS.is_file():
        pytest.skip(f"needs memx-ops-check ({HARNESS} not built: run `make ops`)")
    return HARNESS


def _has_avx2() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx2" in flags and " fma" in flags


@pytest.mark.kernels
def test_check_harness_avx2_and_baseline_equal_the_reference(tmp_path):
    harness = _native_harness()
    if os.uname().machine != "x86_64" or not _has_avx2():
        pytest.skip("needs an x86-64 CPU with AVX2 and FMA (the variant memx-ops-check compares with the portable loops)")
    names = write_check_cases(tmp_path)
    assert len(names) == 52
    assert_check_report(run_check([str(harness)], tmp_path), names, "x86_64", "avx2")


@pytest.mark.kernels
def test_check_harness_refuses_a_truncated_array(tmp_path):
    harness = _native_harness()
    write_check_cases(tmp_path)
    assert_refuses_truncated_input([str(harness)], tmp_path)
