#!/usr/bin/env python
"""GMAT step time and peak memory vs segment length: blocked vs dense-masked local+global attention.

Each (attention, length) runs in its own process so its peak RSS is its own; within one
length the two implementations alternate over repeats. Same weights, same input, PyTorch
eager on the CPU.

    python benchmarks/gmat_attention.py                          # L = 512 .. 8192, window 128, M = 16
    python benchmarks/gmat_attention.py --lengths 1024,4096 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _bench import current_rss_mb, peak_rss_mb, run_worker

IMPLS = ("blocked", "dense")


def worker(impl: str, length: int, repeats: int, window: int, memory: int) -> dict:
    import torch

    from memx.models import build_model

    torch.manual_seed(0)
    cfg = dict(vocab_size=1024, d_model=256, n_heads=4, n_layers=2, d_ff=1024, num_memory=memory,
               max_segment_len=length, window=window, pattern="band", attention=impl)
    model = build_model("gmat", cfg)
    tokens = torch.randint(0, 1024, (1, length))
    args = (tokens, torch.tensor([length]), torch.tensor([True]), torch.zeros(1, memory, 256))
    before = current_rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    peak = peak_rss_mb()
    times = sorted(times[1:])
    return {"impl": impl, "L": length, "median_ms": times[len(times) // 2], "peak_rss_mb": peak, "step_extra_mb": peak - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--memory", type=int, default=16)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "L"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.repeats, a.window, a.memory)))
        return
    rows = []
    for length in (int(x) for x in a.lengths.split(",")):
        res = {}
        for impl in IMPLS:
            res[impl] = run_worker(__file__, [impl, str(length), "--repeats", str(a.repeats), "--window", str(a.window), "--memory", str(a.memory)])
        rows.append(res)
        print(f"L={length} done", file=sys.stderr)
    print(f"\nGMAT step (2 layers, d=256, 4 heads, band window {a.window}, M={a.memory}, B=1), PyTorch eager CPU, median of {a.repeats}")
    head = f"{'L':>6} {'blocked ms':>11} {'dense ms':>10} {'speed-up':>9} {'blocked MiB':>12} {'dense MiB':>10} {'mem ratio':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        b, d = r["blocked"], r["dense"]
        print(f"{b['L']:>6} {b['median_ms']:>11.1f} {d['median_ms']:>10.1f} {d['median_ms'] / b['median_ms']:>8.2f}x "
              f"{b['step_extra_mb']:>12.0f} {d['step_extra_mb']:>10.0f} {d['step_extra_mb'] / max(b['step_extra_mb'], 1):>9.1f}x")
    print("MiB = peak RSS during the steps above the RSS before them (the step's working memory)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
