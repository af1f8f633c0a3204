#!/usr/bin/env python
"""How close ONNX Runtime gets to this machine: FLOPs and bytes per step counted from the
ONNX graph, per-segment p50 measured, against the measured fp32 GEMM peak and copy
bandwidth (memx profile --floor), for the `small` presets at B=1 and B=8, S=128.

Each step is measured twice in the same run: the package's graphs as exported and a copy
with its ONNX Runtime CPU build (`memx build --backend onnxruntime`, here without its check:
attention -> MultiHeadAttention, GELU -> FastGelu; memx.runtimes.onnxruntime_passes), which
runtimes on the CPU run by default; the FLOP count is the exported graph's for both.

    python benchmarks/floor.py
    python benchmarks/floor.py --presets memtr-small,rmt-small --batches 1
    python benchmarks/floor.py --presets rmt-small --batches 1,32
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from memx.exporter import export_preset
from memx.models import presets
from memx.profiling import profile
from memx.package.files import Package
from memx.profiling.floor import floor_report, measure_peak, package_cost
from memx.runtimes.onnxruntime_build import build_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(p.name for p in presets("small") if p.family != "kvcache"))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--segments", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    peak = measure_peak()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            pkg = export_preset(name, Path(tmp) / f"{name}.memx", verify_segments=0)
            shutil.copytree(pkg.path, Path(tmp) / f"{name}-built.memx")
            build_cpu(Path(tmp) / f"{name}-built.memx")
            built = Package.open(Path(tmp) / f"{name}-built.memx")
            for b in (int(x) for x in args.batches.split(",")):
                seg = pkg.manifest.segment["max"]
                cost = package_cost(pkg, batch=b, segment_len=seg)
                for label, contender in (("as exported", pkg), ("CPU build", built)):
                    report = profile(contender, "onnxruntime", batch=b, segments=args.segments, warmup=5, progress=False)
                    f = floor_report(cost, peak, report.contenders[0].latency.p50_ms)
                    rows.append({"preset": name, "B": b, "S": seg, "graph": label, **f})
    print(f"\nONNX Runtime CPU fp32 vs this machine: fp32 GEMM peak {peak.gemm_gflops:.1f} GFLOP/s (ORT MatMul {peak.gemm_size}³), "
          f"copy bandwidth {peak.copy_gbps:.1f} GB/s\n")
    print("| preset | B | S | graph | MFLOP / step | MiB / step | p50 ms | achieved GFLOP/s | % of GEMM peak | floor ms | p50 / floor | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r, before in zip(rows, [rows[i - i % 2] for i in range(len(rows))]):
        print(f"| {r['preset']} | {r['B']} | {r['S']} | {r['graph']} | {r['flops'] / 1e6:,.0f} | {r['bytes'] / 2**20:.1f} | {r['measured_ms']:.2f} | "
              f"{r['achieved_gflops']:.1f} | {100 * r['fraction_of_gemm_peak']:.1f}% | {r['floor_ms']:.2f} | {r['measured_over_floor']:.1f}× | "
              f"{before['measured_ms'] / r['measured_ms']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
