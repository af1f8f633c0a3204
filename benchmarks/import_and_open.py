#!/usr/bin/env python
"""What a process that only runs packages pays before its first output: `import memx.runtimes`,
then open a package and step it once, each in a fresh interpreter (medians of N runs), and
whether torch or onnx got imported on the way (they should not: issue 20).

    python benchmarks/import_and_open.py                  # gmat-tiny, exported here
    python benchmarks/import_and_open.py --package rmt.memx --runs 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import memx.runtimes as rt
t1 = time.perf_counter()
s = rt.open(sys.argv[1]).stream(1)
s.step([[1, 2, 3]])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open_step": t2 - t1, "torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, help="a package to open (default: gmat-tiny, exported into a temporary directory)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.package
        if path is None:
            from memx.exporter import export_preset

            path = export_preset("gmat-tiny", Path(tmp) / "gmat-tiny.memx", verify_segments=0).path
        runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True).stdout) for _ in range(args.runs)]
    imp, step = (statistics.median(r[k] for r in runs) for k in ("import", "open_step"))
    print(f"{path.name}, {args.runs} fresh processes")
    print("| what | median s |\n|---|---:|")
    print(f"| import memx.runtimes | {imp:.3f} |\n| open + first step | {step:.3f} |\n| total | {imp + step:.3f} |")
    print(f"torch imported: {any(r['torch'] for r in runs)}, onnx imported: {any(r['onnx'] for r in runs)}")


if __name__ == "__main__":
    main()
