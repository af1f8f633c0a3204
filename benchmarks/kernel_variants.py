#!/usr/bin/env python
"""memx.LocalGlobalAttention kernel variants: the SIMD build against the portable scalar loops
(the `baseline` variant) on the same inputs, through memx-ops-check (cpp/ops/tests/kernel_check.cc:
both variants in one process, no ONNX Runtime in the timings).

x86-64: AVX2/FMA vs portable, median latency of each per shape and their ratio (`make ops`).
aarch64 NEON vs portable (`make cpp-aarch64`, run under qemu-user): wall time under qemu measures
the translator, not an ARM core, so no timing; instead, with --neon-instructions (default), the
aarch64 instructions one call executes, counted from qemu's execution trace (-d in_asm,exec,nochain:
every translated block's instructions times its executions, one call = the difference between
runs with --repeat 2 and --repeat 1). Instructions are not cycles: a NEON FMLA does four lanes.

Defaults: B = 1, H = 4, band window 64, M = 16 memory slots, one kernel thread.

    python benchmarks/kernel_variants.py
    python benchmarks/kernel_variants.py --shapes 512:64,4096:64 --repeats 50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
X86_CHECK = ROOT / "build" / "ops" / "memx-ops-check"
AARCH64 = ROOT / ".deps" / "aarch64"
ARM_CHECK = ROOT / "build" / "aarch64" / "ops" / "memx-ops-check"
QEMU = AARCH64 / "qemu" / "qemu-aarch64"


def _write_cases(directory: Path, shapes: list[tuple[int, int]], heads: int, window: int, memory: int) -> list[str]:
    """memx-ops-check's format (kernel_check.cc): cases.txt plus raw little-endian arrays; no
    expected output (expected=0), every row full length."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines, names = [], []
    for seq, dim in shapes:
        name = f"S{seq}-D{dim}"
        arrays = {key: rng.standard_normal((1, heads, seq, dim), dtype=np.float32) for key in ("q", "k", "v")}
        arrays |= {key: rng.standard_normal((1, heads, memory, dim), dtype=np.float32) for key in ("mem_k", "mem_v")}
        arrays["lengths"] = np.array([seq], dtype=np.int64)
        for key, a in arrays.items():
            np.ascontiguousarray(a, dtype="<i8" if key == "lengths" else "<f4").tofile(directory / f"{name}.{key}.bin")
        lines.append(f"case {name} pattern=band window={window} causal=0 batch=1 heads={heads} seq={seq} dim={dim} memory={memory} expected=0")
        names.append(name)
    (directory / "cases.txt").write_text("\n".join(lines) + "\n")
    return names


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out


def x86_medians(shapes, heads, window, memory, repeats, threads) -> dict:
    if not X86_CHECK.is_file():
        raise SystemExit(f"{X86_CHECK} is not built: run `make ops`")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with tempfile.TemporaryDirectory() as tmp:
        _write_cases(Path(tmp), shapes, heads, window, memory)
        report = json.loads(_run([str(X86_CHECK), tmp, "--repeat", str(repeats)], env).stdout)
    if [v["variant"] for v in report["variants"]] != ["avx2", "baseline"]:
        raise SystemExit(f"this CPU runs only {[v['name'] for v in report['variants']]}: nothing to compare the portable loops with")
    return report


_BLOCK = re.compile(r"^0x([0-9a-f]+):")
_EXEC = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _instructions(case_dir: str, variant: str, repeat: int) -> int:
    """aarch64 instructions the whole memx-ops-check run executes, from qemu's exec trace."""
    command = [str(QEMU), "-cpu", "cortex-a76", "-d", "in_asm,exec,nochain", "-D", "/dev/stdout", "-L", str(AARCH64 / "sysroot"), str(ARM_CHECK), case_dir,
               "--repeat", str(repeat), "--only", variant, "--out", os.devnull]
    sizes: dict[int, int] = {}  # block start -> its instructions (the latest translation)
    total, start, count = 0, None, 0
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) as proc:
        for line in proc.stdout:
            if line.startswith("Trace"):
                m = _EXEC.match(line)
                if m:
                    total += sizes.get(int(m.group(1), 16), 0)
            elif line.startswith("0x"):
                m = _BLOCK.match(line)
                if m:
                    if start is None:
                        start = int(m.group(1), 16)
                    count += 1
            elif start is not None:  # the blank line after a block's listing
                sizes[start], start, count = count, None, 0
        err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{err[-3000:]}")
    return total


def neon_instructions(shapes, heads, window, memory) -> dict:
    """Instructions per call of each aarch64 variant: (run with --repeat 2) - (run with --repeat 1)."""
    counts = {}
    for seq, dim in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            _write_cases(Path(tmp), [(seq, dim)], heads, window, memory)
            counts[(seq, dim)] = {v: _instructions(tmp, v, 2) - _instructions(tmp, v, 1) for v in ("neon", "baseline")}
        print(f"aarch64 S={seq} D={dim} counted", file=sys.stderr)
    return counts


def _shapes(text: str) -> list[tuple[int, int]]:
    return [(int(s), int(d)) for s, d in (item.split(":") for item in text.split(","))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="512:32,512:64,2048:32,2048:64", help="S:D,... (x86 timings)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--window", type=int, default=64, help="band half-width")
    ap.add_argument("--memory", type=int, default=16, help="memory slots M")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per variant and shape (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads of the kernel (0: OpenMP's default)")
    ap.add_argument("--neon-shapes", default="256:32,256:64", help="S:D,... for the aarch64 instruction counts (H = 1; ~45 s each)")
    ap.add_argument("--neon-instructions", action=argparse.BooleanOptionalAction, default=True,
                    help="count the aarch64 variants' instructions under qemu (needs `make cpp-aarch64`)")
    ap.add_argument("--json", help="write results here")
    a = ap.parse_args()

    shapes = _shapes(a.shapes)
    report = x86_medians(shapes, a.heads, a.window, a.memory, a.repeats, a.threads)
    threads = a.threads or "OpenMP's default"
    print(f"\nmemx.LocalGlobalAttention kernel, x86-64: B=1, H={a.heads}, band window {a.window}, M={a.memory}, "
          f"{threads} thread(s); median of {a.repeats} calls (memx-ops-check, same inputs for both variants)")
    head = f"{'S':>6} {'D':>4} {'avx2 ms':>9} {'portable ms':>12} {'avx2/portable':>14} {'speedup':>8} {'max |diff|':>11}"
    print(head)
    print("-" * len(head))
    results = {"x86": [], "aarch64": []}
    for (seq, dim), case in zip(shapes, report["cases"]):
        fast, slow = case["median_ms"]["avx2"], case["median_ms"]["baseline"]
        diff = case["max_abs_diff_vs_baseline"]["avx2"]
        print(f"{seq:>6} {dim:>4} {fast:>9.3f} {slow:>12.3f} {fast / slow:>14.3f} {slow / fast:>7.1f}x {diff:>11.2e}")
        results["x86"].append({"S": seq, "D": dim, "avx2_ms": fast, "portable_ms": slow, "max_abs_diff": diff})

    print("\naarch64 NEON vs portable: timing left out: under qemu-user every aarch64 instruction is translated to "
          "x86 code (TCG), so wall time measures the translator, not a Cortex-A78AE; time it on the device.")
    if not a.neon_instructions:
        print("(instruction counts skipped: --no-neon-instructions)")
    elif not (ARM_CHECK.is_file() and QEMU.is_file()):
        print(f"(instruction counts skipped: needs `make cpp-aarch64`: {ARM_CHECK} and {QEMU})")
    else:
        neon_shapes = _shapes(a.neon_shapes)
        counts = neon_instructions(neon_shapes, 1, a.window, a.memory)
        print(f"Instead, aarch64 instructions per call (qemu exec trace), B=1, H=1, band window {a.window}, M={a.memory}:")
        head = f"{'S':>6} {'D':>4} {'neon Minstr':>12} {'portable Minstr':>16} {'neon/portable':>14}"
        print(head)
        print("-" * len(head))
        for (seq, dim), c in counts.items():
            print(f"{seq:>6} {dim:>4} {c['neon'] / 1e6:>12.2f} {c['baseline'] / 1e6:>16.2f} {c['neon'] / c['baseline']:>14.3f}")
            results["aarch64"].append({"S": seq, "D": dim, "neon_instructions": c["neon"], "portable_instructions": c["baseline"]})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
