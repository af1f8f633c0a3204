#!/usr/bin/env python
"""Training memory and time: memory replay back-propagation (MRBP) vs full BPTT at equal depth.

Both compute the same gradients (tests/training: <= 1e-5 relative). BPTT keeps every
segment's activations until the backward pass; MRBP keeps only the state entering each
segment and replays segments last to first, so it holds one segment's activations at a
time, for one extra forward pass per segment. Each (method, depth) runs in its own process
so its peak RSS is its own.

    python benchmarks/mrbp_vs_bptt.py                        # memformer, depths 4, 8, 16
    python benchmarks/mrbp_vs_bptt.py --family rmt --depths 8,32 --segment 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _bench import current_rss_mb, peak_rss_mb, run_worker

METHODS = ("bptt", "mrbp")


def worker(method: str, depth: int, family: str, segment: int, batch: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from memx.models import build_model
    from memx.training.tasks import Episode
    from memx.training.trainer import episode_backward

    torch.manual_seed(0)
    cfg = dict(vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=16, max_segment_len=segment)
    model = build_model(family, cfg).train()
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 1024, size=(batch, depth * segment))
    episode = Episode(tokens, np.roll(tokens, -1, axis=1), segment)  # next-token targets on every position
    before = current_rss_mb()
    times = []
    for _ in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        episode_backward(model, episode, bptt_depth=None, mrbp=method == "mrbp")
        times.append((time.perf_counter() - t0) * 1e3)
    times = sorted(times[1:])
    return {"method": method, "depth": depth, "median_ms": times[len(times) // 2], "extra_mb": peak_rss_mb() - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="memformer")
    ap.add_argument("--depths", default="4,8,16", help="segments back-propagated through (the whole episode)")
    ap.add_argument("--segment", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "DEPTH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    common = ["--family", a.family, "--segment", str(a.segment), "--batch", str(a.batch), "--repeats", str(a.repeats)]
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.family, a.segment, a.batch, a.repeats)))
        return
    rows = []
    for depth in (int(x) for x in a.depths.split(",")):
        rows.append({m: run_worker(__file__, [m, str(depth), *common]) for m in METHODS})
        print(f"depth {depth} done", file=sys.stderr)
    print(f"\n{a.family} training step (4 layers, d=256, 16 memory slots, batch {a.batch}, segments of {a.segment}), "
          f"PyTorch CPU, median of {a.repeats}")
    head = f"{'depth':>6} {'BPTT ms':>9} {'MRBP ms':>9} {'MRBP time':>10} {'BPTT MiB':>9} {'MRBP MiB':>9} {'MRBP memory':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        b, m = r["bptt"], r["mrbp"]
        print(f"{b['depth']:>6} {b['median_ms']:>9.0f} {m['median_ms']:>9.0f} {m['median_ms'] / b['median_ms']:>9.2f}x "
              f"{b['extra_mb']:>9.0f} {m['extra_mb']:>9.0f} {m['extra_mb'] / max(b['extra_mb'], 1):>11.2f}x")
    print("MiB = peak RSS during the training steps above the RSS before them; ratios are MRBP / BPTT")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
