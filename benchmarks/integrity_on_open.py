#!/usr/bin/env python
"""What integrity on open costs (issue 17): `Package.open` of the largest zoo package with
sizes only (`verify=False`), with every listed file's sha256 checked for the first time in the
process (cold: memx's hash cache empty; the file is in the OS page cache after the first round),
and again (cached: one stat per file). Rounds alternate in one process; the table shows medians
and the ratio to sizes-only.

    python benchmarks/integrity_on_open.py
    python benchmarks/integrity_on_open.py --package path/to/pkg.memx --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from memx.exporter import export_preset
from memx.package import Package, files
from memx.profiling.stats import machine
from memx.zoo import zoo_entries


def largest_zoo_package(work: Path) -> Path:
    """Export every zoo model's package once and keep the largest (by listed bytes)."""
    best, best_bytes = None, -1
    for entry in zoo_entries():
        out = work / f"{entry.name}.memx"
        pkg = Package.open(out, verify=False) if out.is_dir() else export_preset(entry.name, out, verify_segments=0)
        if pkg.size_bytes() > best_bytes:
            best, best_bytes = out, pkg.size_bytes()
    assert best is not None
    return best


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, help="a package to open (default: the largest zoo package, exported into a temp dir)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.package or largest_zoo_package(Path(tmp))
        Package.open(path, verify=False)  # page cache warm for every contender
        sizes, cold, cached = [], [], []
        for _ in range(args.rounds):
            sizes.append(timed(lambda: Package.open(path, verify=False)))
            files._VERIFIED.clear()  # memx's hash cache empty: every file hashed again
            cold.append(timed(lambda: Package.open(path)))
            cached.append(timed(lambda: Package.open(path)))
        size_mb = Package.open(path, verify=False).size_bytes() / 2**20
        base = statistics.median(sizes)
        print(f"{path.name}: {size_mb:.1f} MiB listed; {args.rounds} rounds; {machine()}")
        print(f"{'open':<28} {'median ms':>10} {'vs sizes only':>14}")
        for name, xs in [("sizes only (verify=False)", sizes), ("sha256, cold (first open)", cold), ("sha256, cached (again)", cached)]:
            print(f"{name:<28} {statistics.median(xs):>10.2f} {statistics.median(xs) / base:>13.2f}x")


if __name__ == "__main__":
    main()
