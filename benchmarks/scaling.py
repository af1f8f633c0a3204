#!/usr/bin/env python
"""Per-segment latency versus history length: a memory model against a plain Transformer
of the same width/depth that keeps the whole history in a KV cache (memx profile --history).

The memory model consumes each history length for real; the baseline is exported per
history length with a cache that size. ONNX Runtime CPU, B=1.

    python benchmarks/scaling.py                                    # gmat-small, 1k,4k,16k,64k
    python benchmarks/scaling.py --preset memtr-small --histories 1k,8k --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from memx.exporter import export_preset
from memx.formatting import human_bytes
from memx.profiling.scaling import scaling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gmat-small")
    ap.add_argument("--histories", default="1k,4k,16k,64k")
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_preset(args.preset, Path(tmp) / f"{args.preset}.memx", verify_segments=0)
        report = scaling(pkg, args.histories, segments=args.segments, warmup=3)
    m = report.machine
    print(f"\nper-segment latency vs history, {args.preset} (ONNX Runtime CPU, B=1, S={report.segment_len}, {report.segments} timed segments per point); "
          f"{m['cpu']}, {m['cores']} cores")
    print("memory: the memory model after consuming the history; full: plain Transformer, same size, KV cache of the whole history\n")
    print("| history (tokens) | memory p50 ms | memory p50 / at first | full-history p50 ms | full / memory | KV cache per stream | memory state per stream |")
    print("|---|---|---|---|---|---|---|")
    for p, g in zip(report.points, report.memory_growth()):
        print(f"| {p.history:,} | {p.memory.p50_ms:.2f} | {g:.2f}× | {p.baseline.p50_ms:.2f} | {p.baseline.p50_ms / p.memory.p50_ms:.1f}× | "
              f"{human_bytes(p.baseline_state_bytes)} | {human_bytes(p.memory_state_bytes)} |")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1) + "\n")


if __name__ == "__main__":
    main()
