#!/usr/bin/env python
"""`make bench`: run the headline benchmarks one after another and write
benchmarks/RESULTS.md with each one's table and the machine description.

    python benchmarks/run_all.py                      # all
    python benchmarks/run_all.py --only scaling,quantized_latency
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from memx.profiling.stats import machine

HERE = Path(__file__).parent
BENCHMARKS = ["step_latency", "generate", "cpp_overhead", "quantized_latency", "sparse_attention", "gmat_attention", "scaling", "floor", "state_precision_ablation", "mrbp_vs_bptt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmarks {unknown}; choose from {BENCHMARKS}")
    m = machine()
    parts = [f"# memx benchmark results\n\nMeasured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {m['cpu']}, {m['cores']} cores, "
             f"{m['platform']}, Python {m['python']}, ONNX Runtime {m.get('onnxruntime', '?')}. Regenerate with `make bench`.\n\n"
             f"Benchmarks in this run: {', '.join(names)}" + (f" (not run: {', '.join(b for b in BENCHMARKS if b not in names)})" if len(names) < len(BENCHMARKS) else "") + ".\n"]
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True)
        took = time.perf_counter() - t0
        body = run.stdout.strip() if run.returncode == 0 else f"FAILED (exit {run.returncode}):\n{run.stderr[-3000:]}"
        print(body, flush=True)
        markdown = any(line.startswith("|") for line in body.splitlines())  # tables print as markdown; the rest verbatim
        parts.append(f"## {name} ({took:.0f} s)\n\n`python benchmarks/{name}.py`\n\n" + (body if markdown else f"```\n{body}\n```") + "\n")
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
