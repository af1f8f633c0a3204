#!/usr/bin/env python
"""The C++ runtime's cost: memx::Stream::step over a bare Ort::Session::Run, and C++ vs Python.

1. Per-step overhead (target <= 50 us): `memx-bench-overhead` steps a tiny package through
   memx::Stream::step and through a hand-written loop over Ort::Session::Run that feeds the
   state outputs back by hand, in alternating rounds in one process; medians per step.
2. C++ vs Python runtime at B=1: `memx-run` (libmemx) and the Python Stream over the same
   package and tokens, same ONNX Runtime library and settings, alternating runs; median of the
   per-run step p50s.

    make cpp && python benchmarks/cpp_overhead.py
    python benchmarks/cpp_overhead.py --overhead-presets rmt-tiny --runtime-presets rmt-small --steps 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from memx import runtimes
from memx.exporter import Package, export_preset
from memx.ops.library import find_library
from memx.profiling.stats import machine

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "cpp"


def export(preset: str, work: Path):
    out = work / f"{preset}.memx"
    if out.is_dir():
        return Package.open(out)
    return export_preset(preset, out, verify_segments=0)


def overhead_row(pkg, steps: int, rounds: int) -> dict:
    out = subprocess.run([str(BUILD / "memx-bench-overhead"), str(pkg.path), "--steps", str(steps), "--rounds", str(rounds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpp_p50(pkg, tokens: Path, seg: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        cmd = [str(BUILD / "memx-run"), str(pkg.path), "--tokens", str(tokens), "--segment-len", str(seg), "--warmup", "20", "--quiet", "--json", f"{d}/r.json"]
        if pkg.manifest.custom_ops and find_library() is not None:
            cmd += ["--ops-lib", str(find_library())]
        subprocess.run(cmd, check=True)
        return json.loads(Path(f"{d}/r.json").read_text())["p50_ms"]


def python_p50(pkg, tokens: np.ndarray, seg: int) -> float:
    rt = runtimes.open(pkg, backend="onnxruntime")
    warm = rt.stream(1)
    for k in range(20):
        warm.step(tokens[:, k * seg : (k + 1) * seg])
    stream = rt.stream(1)
    times = []
    for start in range(0, tokens.shape[1], seg):
        ids = tokens[:, start : start + seg]
        t0 = time.perf_counter()
        stream.step(ids)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overhead-presets", default="rmt-tiny,memtr-tiny,gmat-tiny")
    ap.add_argument("--runtime-presets", default="rmt-tiny,rmt-small,gmat-small,memformer-tiny")
    ap.add_argument("--steps", type=int, default=300, help="steps per round (overhead) / per run (C++ vs Python)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per runtime (C++ vs Python)")
    args = ap.parse_args()
    for tool in ("memx-run", "memx-bench-overhead"):
        if not (BUILD / tool).is_file():
            raise SystemExit(f"{BUILD / tool} is missing: run `make cpp` first")
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} cores, ONNX Runtime {m.get('onnxruntime', '?')} (CPU).\n")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        print("Per-step overhead of memx::Stream::step over a bare Ort::Session::Run (B=1, S = the preset's maximum; target <= 50 us)\n")
        print("| preset | bare Session::Run (us) | Stream::step (us) | overhead (us) | ratio |")
        print("|---|---:|---:|---:|---:|")
        for preset in args.overhead_presets.split(","):
            r = overhead_row(export(preset, work), args.steps, args.rounds)
            print(f"| {preset} | {r['bare_run_us']:.1f} | {r['memx_step_us']:.1f} | {r['overhead_us']:+.1f} | {r['ratio']:.3f} |")
        print("\nC++ (libmemx via memx-run) vs Python runtime, B=1, step latency p50 (median over alternating runs)\n")
        print("| preset | S | Python p50 (ms) | C++ p50 (ms) | Python / C++ |")
        print("|---|---:|---:|---:|---:|")
        for preset in args.runtime_presets.split(","):
            pkg = export(preset, work)
            seg = pkg.manifest.segment["max"]
            tokens = np.random.default_rng(0).integers(0, pkg.manifest.vocab_size, size=(1, args.steps * seg), dtype=np.int64)
            np.save(work / "tokens.npy", tokens)
            cpp, py = [], []
            for _ in range(args.runs):
                cpp.append(cpp_p50(pkg, work / "tokens.npy", seg))
                py.append(python_p50(pkg, tokens, seg))
            c, p = statistics.median(cpp), statistics.median(py)
            print(f"| {preset} | {seg} | {p:.3f} | {c:.3f} | {p / c:.2f} |")


if __name__ == "__main__":
    main()
