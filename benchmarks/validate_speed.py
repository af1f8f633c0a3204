#!/usr/bin/env python
"""Wall time of `memx validate` on rmt-small (issue 20): the parity check over N segments
(``check_package``, the function the CLI calls: PyTorch reference vs ONNX Runtime, outputs and
states compared at every segment) and the decode check the CLI runs after it (``check_decode``,
64 segments token by token), each timed in a fresh worker process; with ``--cli`` also the
whole command, ``memx validate PKG --segments N --no-record``, start-up and imports included.
The table shows the median of ``--repeats`` runs.

``--baseline SRC`` times another memx source tree (a copy of ``memx/`` from before a change:
SRC/memx) the same way, alternating with this one run by run, so that both see the same load.

    python benchmarks/validate_speed.py                               # 1024 segments, 3 repeats
    python benchmarks/validate_speed.py --segments 64 --repeats 1 --cli
    python benchmarks/validate_speed.py --package rmt.memx --baseline /tmp/orig --cli
    python benchmarks/validate_speed.py --split --segments 64   # ms per segment: reference, candidate, compare

Recorded 2026-12-06 on the 2-core Xeon VM (ORT 1.32, torch 2.13 CPU), rmt-small, `memx validate
PKG --segments 1024 --no-record` (64 decode segments), before = a copy of memx/ from before the change:

- loaded (other users' test runs, load average 3-4): before 291 s and 174 s (two runs before any
  change), 339 s vs after 86 s in one back-to-back pair: 3.9x. The old loop ran the torch
  reference (2 OpenMP threads) and ONNX Runtime (2 spinning pool threads) one after the other;
  each pool's threads spin or wait on a descheduled sibling while the other library runs.
- quiet (this script, median of 3, load average ~2 = its own two threads): CLI 91.3 s -> 60.7 s
  (1.50x); check_package 76.7 s -> 42.6 s (1.80x); check_decode 16.2 s -> 18.3 s (0.88x).
  The parity loop is now at the compute floor of two cores: --split gives 36.6 ms (torch, one
  thread) and 39.5 ms (ORT, one thread) per segment, side by side in 42 ms (72 ms one after
  the other with the default threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "rmt-small"
DECODE_SEGMENTS = 64  # memx validate's default --decode-segments


def _use_source(src: str) -> None:
    """Import memx from ``src`` (a directory holding memx/) instead of the installed one: the
    editable install's import hook is dropped first, since it answers before sys.path does."""
    if not src:
        return
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or "") and "editable" not in type(f).__module__]
    sys.path.insert(0, src)


def worker(src: str, package: str, segments: int, decode_segments: int) -> dict[str, float]:
    """In this process: check_package (parity, not recorded) and check_decode, as the CLI runs them."""
    _use_source(src)
    from memx.validation.check import check_package
    from memx.validation.decode import check_decode

    t0 = time.perf_counter()
    report = check_package(package, segments=segments, record=False, progress=False)
    t1 = time.perf_counter()
    decode = check_decode(package, segments=decode_segments) if decode_segments else None
    t2 = time.perf_counter()
    return {"check_s": t1 - t0, "decode_s": t2 - t1, "total_s": t2 - t0, "passed": float(report.passed and (decode is None or decode.passed)), "max_error": report.max_error}


def run_worker(src: str, package: Path, segments: int, decode_segments: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--worker", src, str(package), str(segments), str(decode_segments)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker ({src or 'this tree'}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(src: str, package: Path, segments: int, decode_segments: int) -> float:
    """Seconds of `memx validate PKG --segments N --decode-segments D --no-record` in a fresh interpreter (exit 0 or 1)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--cli-worker", src, "validate", str(package), "--segments", str(segments),
                          "--decode-segments", str(decode_segments), "--no-record"],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise RuntimeError(f"memx validate ({src or 'this tree'}) exited {out.returncode}:\n{out.stderr[-3000:]}")
    return seconds


def cli_worker(src: str, argv: list[str]) -> int:
    """The memx command line, with memx imported from ``src``."""
    _use_source(src)
    from memx.cli import main as memx_main

    sys.argv = ["memx", *argv]
    return memx_main()


def split(package: Path, segments: int) -> None:
    """Where a segment's time goes: the plain loop (plan, reference step, candidate step, compare,
    one after the other) with the libraries' default threads, as validate ran before issue 20,
    and with one thread each; then validate itself (both side by side). ms per segment."""
    import numpy as np
    import torch

    from memx import runtimes
    from memx.package.files import Package
    from memx.validation.parity import _Tally, stream_plans, validate

    pkg = Package.open(package)
    default_threads = torch.get_num_threads()
    print(f"{'loop':<44}{'plan':>8}{'reference':>11}{'candidate':>11}{'compare':>9}{'total':>8}   ms/segment over {segments} segments")
    for name, threads in (("plain loop, default threads", None), ("plain loop, one thread each", 1)):
        torch.set_num_threads(threads or default_threads)
        ref = runtimes.open(pkg, backend="torch").stream(4)
        cand = runtimes.open(pkg, backend="onnxruntime", **({"intra_op_threads": threads} if threads else {})).stream(4)
        plans, tally, spent = stream_plans(np.random.default_rng(0), pkg, batch=4, reset_prob=0.03), _Tally(1e-4), np.zeros(4)
        for seg in range(segments):
            t = [time.perf_counter()]
            plan = next(plans)
            t.append(time.perf_counter())
            out_r, state_r = ref.step(plan.tokens, plan.lengths, plan.reset), ref.state
            t.append(time.perf_counter())
            out_c, state_c = cand.step(plan.tokens, plan.lengths, plan.reset), cand.state
            t.append(time.perf_counter())
            tally.add(seg, out_r, state_r, out_c, state_c)
            t.append(time.perf_counter())
            spent += np.diff(t)
        ms = spent / segments * 1e3
        print(f"{name:<44}" + "".join(f"{v:>{w}.1f}" for v, w in zip(ms, (8, 11, 11, 9))) + f"{ms.sum():>8.1f}")
    torch.set_num_threads(default_threads)
    t0 = time.perf_counter()
    validate(pkg, segments=segments, progress=False)
    print(f"{'validate (reference in a second thread)':<44}{'':>39}{(time.perf_counter() - t0) / segments * 1e3:>8.1f}")


def machine_text() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        load = "load average %.2f" % os.getloadavg()[0]
    except OSError:
        load = ""
    return f"{model}, {os.cpu_count()} cores, {load}"


def exported(package: Path | None, work: Path) -> Path:
    """The package to validate: the one given, or rmt-small exported into ``work``."""
    if package is not None:
        return package
    from memx.exporter import export_preset

    out = work / f"{PRESET}.memx"
    t0 = time.perf_counter()
    export_preset(PRESET, out, verify_segments=0)
    print(f"exported {PRESET} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1024, help="parity segments (memx validate --segments)")
    ap.add_argument("--decode-segments", type=int, default=DECODE_SEGMENTS, help="decode-check segments (memx validate --decode-segments; 0: none)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per contender; the table shows medians")
    ap.add_argument("--package", type=Path, help=f"a package to validate (default: {PRESET}, exported into a temp dir)")
    ap.add_argument("--cli", action="store_true", help="also time the whole command in a fresh process")
    ap.add_argument("--baseline", default="", help="a source tree holding an older memx/ to time side by side (alternating)")
    ap.add_argument("--split", action="store_true", help="instead: where a segment's time goes (reference, candidate, compare), this tree, in this process")
    args = ap.parse_args()
    if args.split:
        with tempfile.TemporaryDirectory() as tmp:
            split(exported(args.package, Path(tmp)), args.segments)
        return
    contenders = [("this tree", "")] + ([(f"baseline {args.baseline}", str(Path(args.baseline).resolve()))] if args.baseline else [])
    results: dict[str, dict[str, list[float]]] = {name: {} for name, _ in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        package = exported(args.package, Path(tmp))
        for r in range(args.repeats):
            for name, src in contenders:
                got = run_worker(src, package, args.segments, args.decode_segments)
                if args.cli:
                    got["cli_s"] = run_cli(src, package, args.segments, args.decode_segments)
                for k, v in got.items():
                    results[name].setdefault(k, []).append(v)
                print(f"run {r + 1}/{args.repeats} {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in got.items()), file=sys.stderr)
    print(f"memx validate {PRESET}: {args.segments} parity segments + {args.decode_segments} decode segments, batch 4; median of {args.repeats}; {machine_text()}")
    columns = [("check_s", "check_package s"), ("decode_s", "check_decode s"), ("total_s", "in-process s")] + ([("cli_s", "CLI wall s")] if args.cli else [])
    print(f"{'contender':<40}" + "".join(f"{title:>17}" for _, title in columns))
    for name, _ in contenders:
        print(f"{name:<40}" + "".join(f"{statistics.median(results[name][k]):>17.1f}" for k, _ in columns))
    if args.baseline:
        base, new = results[contenders[1][0]], results[contenders[0][0]]
        print(f"{'speed-up (baseline / this tree)':<40}" + "".join(f"{statistics.median(base[k]) / statistics.median(new[k]):>16.2f}x" for k, _ in columns))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--cli-worker":
        sys.exit(cli_worker(sys.argv[2], sys.argv[3:]))
    else:
        main()
