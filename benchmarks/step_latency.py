#!/usr/bin/env python
"""Per-segment latency: PyTorch eager vs ONNX Runtime fp32 (or any backend[:device]), through the same memx Stream API.

Interleaved rounds (each round steps every contender once, in rotating order) so machine
drift hits all contenders alike; prints medians, p90 and the speed-up over eager.

    python benchmarks/step_latency.py                        # rmt-small, memtr-small; (B=1,S=128), (B=8,S=128)
    python benchmarks/step_latency.py --presets rmt-small --rounds 200 --json out.json
    python benchmarks/step_latency.py --gpu          # on a CUDA machine: every GPU path side by side

A contender is backend[:device][/mode]: mode "host" steps the generic Stream (state through the
host every call), "resident" keeps the state in device buffers (the default off the CPU),
"graphs" is resident and replays a captured CUDA graph per step. Contenders whose library or
device is missing are listed as not available instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memx import runtimes
from memx.errors import MemxError
from memx.exporter import export_preset
from memx.profiling.stats import machine as stats_machine

DEFAULT_CONTENDERS = "torch,onnxruntime"  # backend[:device][/mode]; the first is the baseline of the ratios
GPU_CONTENDERS = "onnxruntime,torch:cuda/host,torch:cuda/resident,torch:cuda/graphs,onnxruntime:cuda/host,onnxruntime:cuda/resident,tensorrt:cuda/resident,tensorrt:cuda/graphs"
MODES = {"": {}, "host": {"resident": False}, "resident": {"resident": True}, "graphs": {"resident": True, "cuda_graphs": True}}


def machine() -> str:
    m = stats_machine()
    return f"{m['cpu']}, {m['cores']} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def open_stream(pkg, contender: str, batch: int, engines: dict[str, Path]) -> runtimes.Stream:
    spec, _, mode = contender.partition("/")
    backend, _, device = spec.partition(":")
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r} in {contender!r}; choose from {sorted(m for m in MODES if m)}")
    if backend == "tensorrt":  # engines first (built once per package, needs TensorRT)
        if pkg.path not in engines:
            import shutil

            from memx.tensorrt import build_engines

            dst = Path(str(pkg.path) + ".trt")
            shutil.copytree(pkg.path, dst, dirs_exist_ok=True)
            build_engines(dst, batch="1,8,8")
            engines[pkg.path] = dst
        return runtimes.open(engines[pkg.path], backend=backend, device=device or "cuda", **MODES[mode]).stream(batch)
    return runtimes.open(pkg, backend=backend, device=device or "cpu", **MODES[mode]).stream(batch)


def open_streams(pkg, contenders: list[str], batch: int, unavailable: dict[str, str], engines: dict[str, Path]) -> dict[str, runtimes.Stream]:
    streams = {}
    for name in contenders:
        try:
            streams[name] = open_stream(pkg, name, batch, engines)
        except MemxError as e:  # not installed / no device: say so, measure the rest
            unavailable.setdefault(name, f"{type(e).__name__}: {e}")
    return streams


def measure(pkg, contenders: list[str], batch: int, seg: int, rounds: int, warmup: int, seed: int = 0, unavailable: dict[str, str] | None = None,
            engines: dict[str, Path] | None = None) -> dict[str, np.ndarray]:
    streams = open_streams(pkg, contenders, batch, {} if unavailable is None else unavailable, {} if engines is None else engines)
    contenders = list(streams)
    rng = np.random.default_rng(seed)
    vocab = pkg.manifest.vocab_size
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + rounds):
        tokens = rng.integers(0, vocab, size=(batch, seg))
        k = r % len(contenders)
        order = contenders[k:] + contenders[:k]  # rotate who goes first
        for name in order:
            t0 = time.perf_counter()
            streams[name].step(tokens)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt * 1e3)
    return {k: np.asarray(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="rmt-small,memtr-small")
    ap.add_argument("--shapes", default="1x128,8x128", help="BxS list")
    ap.add_argument("--contenders", default=DEFAULT_CONTENDERS, help="backend[:device][/mode] list; ratios are against the first")
    ap.add_argument("--gpu", action="store_true", help=f"contenders {GPU_CONTENDERS}; shapes 1x128,8x128")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    if args.gpu:
        args.contenders = GPU_CONTENDERS
    rows = []
    unavailable: dict[str, str] = {}
    engines: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            pkg = export_preset(preset, Path(tmp) / f"{preset}.memx", verify_segments=4)
            for shape in args.shapes.split(","):
                b, s = (int(x) for x in shape.split("x"))
                contenders = args.contenders.split(",")
                t = measure(pkg, contenders, b, s, args.rounds, args.warmup, unavailable=unavailable, engines=engines)
                if not t:
                    continue
                base = float(np.median(next(iter(t.values()))))
                for name in t:
                    med = float(np.median(t[name]))
                    rows.append({"preset": preset, "B": b, "S": s, "backend": name, "median_ms": med,
                                 "p90_ms": float(np.percentile(t[name], 90)), "p99_ms": float(np.percentile(t[name], 99)), "tokens_per_s": b * s / (med / 1e3),
                                 "speedup_vs_first": base / med})

    print(f"\nper-segment latency, {args.rounds} interleaved rounds after {args.warmup} warm-up; {machine()}")
    print("speed-up = median of the first available contender / median of the row (higher is faster)")
    head = f"{'preset':<14}{'B':>3}{'S':>5}  {'backend':<26}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}{'tokens/s':>11}{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['preset']:<14}{r['B']:>3}{r['S']:>5}  {r['backend']:<26}{r['median_ms']:>10.3f}{r['p90_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{r['tokens_per_s']:>11,.0f}{r['speedup_vs_first']:>9.2f}x")
    for name, why in unavailable.items():
        print(f"not available: {name}: {why}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows, "unavailable": unavailable}, indent=2) + "\n")


if __name__ == "__main__":
    main()
