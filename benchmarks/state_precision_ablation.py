#!/usr/bin/env python
"""Ablation: the precision the memory is stored at (fp32 / fp16 / int8) under int8-qdq,
for every zoo model: task accuracy (>= 1,000 segments of held-out episodes) and drift
after 1,000 segments of one never-reset stream, against the fp32 PyTorch reference.

    python benchmarks/state_precision_ablation.py                 # all zoo models, prints a markdown table
    python benchmarks/state_precision_ablation.py --models gmat-majority --segments 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from memx.calibration import quantize_package
from memx.validation.drift import compare_precision
from memx.exporter import export_preset
from memx.zoo import zoo_entries

STATES = ["fp32", "fp16", "int8"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(e.name for e in zoo_entries()))
    ap.add_argument("--method", default="int8-qdq")
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.models.split(","):
            fp32 = export_preset(name, tmp / f"{name}.memx", verify_segments=0)
            for state in STATES:
                q = quantize_package(fp32, tmp / f"{name}-{state}.memx", method=args.method, state_precision=state, progress=False).package
                r = compare_precision(q, segments=args.segments, progress=False)
                n = r.summary_numbers()
                acc = r.task_accuracy
                rows.append({"model": name, "state": state, "metric": acc.metric, "fp32_accuracy": acc.reference, "accuracy": acc.candidate,
                             "delta_points": -acc.drop_points, "state_rel_error_final": max(n["state_rel_error_final"].values()),
                             "state_rel_error_mean_last100": max(float(np.mean(v[-100:])) for v in r.state_rel_error.values()),
                             "top1_agreement_last10pct": n["top1_agreement_last10pct"], "first_divergence": (r.first_divergence or {}).get("segment")})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.method}, memory stored at fp32 / fp16 / int8; accuracy over >= 1,000 segments of held-out episodes; drift after {args.segments} "
          "segments of one never-reset stream (4 streams), against the fp32 PyTorch reference\n")
    print("| zoo model | state | accuracy (fp32 → quantized) | Δ points | state rel. error, mean of last 100 segments | top-1 agreement, last 10% | first segment with state error > 0.05 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['state']} | {r['fp32_accuracy']:.1%} → {r['accuracy']:.1%} ({r['metric']}) | {r['delta_points']:+.2f} | "
              f"{r['state_rel_error_mean_last100']:.3f} | {r['top1_agreement_last10pct']:.1%} | {r['first_divergence'] if r['first_divergence'] is not None else 'none'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
