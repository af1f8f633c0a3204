#!/usr/bin/env python
"""Per-segment latency: PyTorch eager vs ONNX Runtime fp32 (or any backend[:device]), through the same memx Stream API.

Interleaved rounds (each round steps every contender once, in rotating order) so machine
drift hits all contenders alike; prints medians, p90 and the speed-up over eager.

    python benchmarks/step_latency.py                        # rmt-small, memtr-small; (B=1,S=128), (B=8,S=128)
    python benchmarks/step_latency.py --presets rmt-small --rounds 200 --json out.json
    python benchmarks/step_latency.py --contenders torch,torch:cuda,onnxruntime   # on a CUDA machine
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
from memx.exporter import export_preset
from memx.profiling.stats import machine as stats_machine

DEFAULT_CONTENDERS = "torch,onnxruntime"  # backend[:device]; the first is the baseline of the ratios


def machine() -> str:
    m = stats_machine()
    return f"{m['cpu']}, {m['cores']} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def open_stream(pkg, contender: str, batch: int) -> runtimes.Stream:
    backend, _, device = contender.partition(":")
    return runtimes.open(pkg, backend=backend, device=device or "cpu").stream(batch)


def measure(pkg, contenders: list[str], batch: int, seg: int, rounds: int, warmup: int, seed: int = 0) -> dict[str, np.ndarray]:
    streams = {name: open_stream(pkg, name, batch) for name in contenders}
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
    ap.add_argument("--contenders", default=DEFAULT_CONTENDERS, help="backend[:device] list; ratios are against the first")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            pkg = export_preset(preset, Path(tmp) / f"{preset}.memx", verify_segments=4)
            for shape in args.shapes.split(","):
                b, s = (int(x) for x in shape.split("x"))
                contenders = args.contenders.split(",")
                t = measure(pkg, contenders, b, s, args.rounds, args.warmup)
                base = float(np.median(t[contenders[0]]))
                for name in contenders:
                    med = float(np.median(t[name]))
                    rows.append({"preset": preset, "B": b, "S": s, "backend": name, "median_ms": med,
                                 "p90_ms": float(np.percentile(t[name], 90)), "tokens_per_s": b * s / (med / 1e3),
                                 "speedup_vs_first": base / med})

    print(f"\nper-segment latency, {args.rounds} interleaved rounds after {args.warmup} warm-up; {machine()}")
    print(f"speed-up = median of {args.contenders.split(',')[0]} / median of the row (higher is faster)")
    head = f"{'preset':<14}{'B':>3}{'S':>5}  {'backend':<18}{'median ms':>10}{'p90 ms':>9}{'tokens/s':>11}{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['preset']:<14}{r['B']:>3}{r['S']:>5}  {r['backend']:<18}{r['median_ms']:>10.2f}{r['p90_ms']:>9.2f}"
              f"{r['tokens_per_s']:>11,.0f}{r['speedup_vs_first']:>9.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
