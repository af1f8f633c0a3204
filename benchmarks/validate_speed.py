#!/usr/bin/env python
"""Wall time of `memx validate` on rmt-small (issue 20): the parity check over N segments
(``check_package``, the function the CLI calls: PyTorch reference vs ONNX Runtime, outputs and
states compared at every segment) and the decode check the CLI runs after it (``check_decode``,
64 segments token by token), each timed in a fresh worker process; with ``--cli`` also the
whole command, ``memx validate PKG --segments N --no-record``, start-up and imports included.
The table shows the median of ``--repeats`` runs.

``--precision`` (or ``--package`` with a quantized package) times the precision check instead:
gmat-majority exported and quantized to int8-qdq, ``check_package`` running
``compare_precision`` (torch fp32 reference vs the quantized package on ONNX Runtime over N
never-reset segments, then the task accuracy through both, its time in its own column) and
saving the report's JSON and plot. Every run fingerprints its report's numbers; the last line
says whether all runs, both contenders, gave the same.

``--baseline SRC`` times another memx source tree (a copy of ``memx/`` from before a change:
SRC/memx) the same way, alternating with this one run by run, so that both see the same load.

    python benchmarks/validate_speed.py                               # 1024 segments, 3 repeats
    python benchmarks/validate_speed.py --segments 64 --repeats 1 --cli
    python benchmarks/validate_speed.py --package rmt.memx --baseline /tmp/orig --cli
    python benchmarks/validate_speed.py --split --segments 64   # ms per segment: reference, candidate, compare
    python benchmarks/validate_speed.py --precision --baseline /tmp/orig --cli   # the precision check of a quantized package
    python benchmarks/validate_speed.py --precision --split     # its drift loop per segment, and its task accuracy

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

The precision check got the same treatment (compare_precision: the reference in a second
thread up to 8 segments ahead, the task accuracy's two passes side by side, each on half the
cores). Recorded 2026-12-06 on the same VM, gmat-majority int8-qdq (`memx export gmat-majority`,
`memx quantize`), `--precision --segments 1024 --baseline --cli`, before = memx/ of commit 377e695;
every run of both trees gave the same report (same fingerprint: every per-segment curve, the
task accuracy and its agreement):

- loaded (a CI run in another checkout, load average 4-5; the load ended during the third
  pair): check_package 227 / 144 / 17.0 s -> 5.75 / 5.32 / 4.28 s, median 143.5 s -> 5.3 s
  (27x); CLI 140 / 121 / 19.5 s -> 6.2 / 5.9 / 4.9 s, median 120.9 s -> 5.9 s (20x); task
  accuracy median 2.7 s -> 0.3 s. Plain `time memx validate g8.memx --segments 1024
  --no-record` took 140 s with the old tree just before, under the same load.
- quiet (median of 3, load average ~2 = its own two threads): check_package 17.0 s -> 4.4 s
  (3.9x), CLI 19.9 s -> 4.8 s (4.2x), task accuracy 0.26 s -> 0.15 s; two more alternating
  pairs of the plain CLI: 18.3 / 17.9 s -> 5.0 / 4.8 s.
- --split (quiet, 1024 segments), ms per segment of the drift loop: plain loop with the default
  threads 14.6 (torch: its 2-thread OpenMP pool waits on a core ONNX Runtime's spinning pool
  holds) + 2.1 (ORT) + 0.3 (metrics) = 17.0; one thread each 2.0 + 1.1 + 0.2 = 3.3; side by side
  2.7 (a model this small is held back by the GIL: its Python between the kernels). Task
  accuracy (205 items through each): one pass after the other 0.25 s (default threads) or
  0.27 s (one thread each), side by side 0.16 s.
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
PRECISION_PRESET = "gmat-majority"  # --precision: a zoo model (a task: the check's task accuracy runs too), quantized
DECODE_SEGMENTS = 64  # memx validate's default --decode-segments


def _use_source(src: str) -> None:
    """Import memx from ``src`` (a directory holding memx/) instead of the installed one: the
    editable install's import hook is dropped first, since it answers before sys.path does."""
    if not src:
        return
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or "") and "editable" not in type(f).__module__]
    sys.path.insert(0, src)


def worker(src: str, package: str, segments: int, decode_segments: int) -> dict[str, float]:
    """In this process: check_package (not recorded: parity for an fp32 package, the precision
    check for a quantized one, whose task accuracy is timed apart) and check_decode (packages
    with decode graphs), as the CLI runs them. ``report`` fingerprints the report's numbers
    (contenders that measure the same give the same)."""
    _use_source(src)
    import hashlib

    from memx.package.files import Package
    from memx.validation import drift
    from memx.validation.check import check_package
    from memx.validation.decode import check_decode

    task_s = [0.0]
    task_accuracy = drift.task_accuracy

    def timed_task_accuracy(*args, **kwargs):  # compare_precision looks it up in drift's namespace at each call
        t = time.perf_counter()
        try:
            return task_accuracy(*args, **kwargs)
        finally:
            task_s[0] += time.perf_counter() - t

    drift.task_accuracy = timed_task_accuracy
    has_decode = Package.open(package).manifest.decode is not None
    t0 = time.perf_counter()
    report = check_package(package, segments=segments, record=False, progress=False)
    t1 = time.perf_counter()
    decode = check_decode(package, segments=decode_segments) if decode_segments and has_decode else None
    t2 = time.perf_counter()
    numbers = report.to_dict()
    numbers.pop("reports", None)  # where save_report wrote them
    fingerprint = int(hashlib.sha256(json.dumps(numbers, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)
    return {"check_s": t1 - t0, "task_s": task_s[0], "decode_s": t2 - t1, "total_s": t2 - t0,
            "passed": float(report.passed and (decode is None or decode.passed)), "report": float(fingerprint)}


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


def split_precision(package: Path, segments: int) -> None:
    """The precision check's drift loop, where a segment's time goes: the plain loop (reference
    step, candidate step, metrics, one after the other) with the libraries' default threads, as
    compare_precision ran before, and with one thread each; then compare_precision itself
    without the task accuracy (both side by side); then the task accuracy's two passes. ms per
    segment (the task accuracy: seconds)."""
    import numpy as np
    import torch

    from memx import runtimes
    from memx.package.files import Package
    from memx.validation.drift import _logit_metrics, _rel_error, compare_precision
    from memx.validation.sidebyside import torch_threads
    from memx.validation.sources import RandomSource, TaskSource

    pkg = Package.open(package)
    m = pkg.manifest
    seg, batch = m.segment["max"], 4
    source = TaskSource(m.task, seg, causal=m.causal, vocab_size=m.vocab_size) if m.task else RandomSource(m.vocab_size)
    tokens = source.streams(batch, segments * seg, np.random.default_rng(0))
    lengths = np.full(batch, seg, dtype=np.int64)
    logits = next((o.name for o in m.outputs if o.name == "logits"), None)
    default_threads = torch.get_num_threads()
    print(f"{'drift loop':<44}{'reference':>11}{'candidate':>11}{'metrics':>9}{'total':>8}   ms/segment over {segments} segments")
    for name, threads in (("plain loop, default threads", None), ("plain loop, one thread each", 1)):
        torch.set_num_threads(threads or default_threads)
        ref = runtimes.open(pkg, backend="torch").stream(batch)
        cand = runtimes.open(pkg, backend="onnxruntime", **({"intra_op_threads": threads} if threads else {})).stream(batch)
        spent = np.zeros(3)
        for d in range(segments):
            chunk = tokens[:, d * seg : (d + 1) * seg]
            t = [time.perf_counter()]
            out_r, state_r = ref.step(chunk), ref.state
            t.append(time.perf_counter())
            out_c, state_c = cand.step(chunk), cand.state
            t.append(time.perf_counter())
            max(float(np.abs(out_r[k].astype(np.float64) - out_c[k]).max()) for k in out_r)
            if logits is not None:
                _logit_metrics(out_r[logits], out_c[logits], lengths)
            for k in state_r:
                _rel_error(state_r[k], state_c[k])
            t.append(time.perf_counter())
            spent += np.diff(t)
        ms = spent / segments * 1e3
        print(f"{name:<44}" + "".join(f"{v:>{w}.2f}" for v, w in zip(ms, (11, 11, 9))) + f"{ms.sum():>8.2f}")
    torch.set_num_threads(default_threads)
    t0 = time.perf_counter()
    compare_precision(pkg, segments=segments, with_task=False, progress=False)
    print(f"{'compare_precision, no task (side by side)':<44}{'':>31}{(time.perf_counter() - t0) / segments * 1e3:>8.2f}")
    if not m.task:
        return
    from memx.models.zoo import get_zoo, is_zoo
    from memx.training.tasks import get_task
    from memx.validation.accuracy import runtime_task_accuracy
    from memx.validation.sidebyside import side_by_side

    seg_len = get_zoo(m.preset).segment_len if m.preset and is_zoo(m.preset) else seg
    items = max(200, -(-segments // get_task(m.task).make(np.random.default_rng(0), 1, seg_len).n_segments))  # as task_accuracy counts them
    print(f"task accuracy, {items} items through each runtime{'':<8}{'seconds':>8}")
    for name, threads in (("one pass after the other, default threads", None), ("one pass after the other, one thread each", 1), ("side by side, one thread each", 1)):
        ref_rt = runtimes.open(pkg, backend="torch")
        cand_rt = runtimes.open(pkg, backend="onnxruntime", **({"intra_op_threads": threads} if threads else {}))
        ref_pass = lambda: runtime_task_accuracy(ref_rt, m.task, items=items, segment_len=seg_len)  # noqa: E731
        cand_pass = lambda: runtime_task_accuracy(cand_rt, m.task, items=items, segment_len=seg_len)  # noqa: E731
        with torch_threads(threads):
            t0 = time.perf_counter()
            side_by_side(ref_pass, cand_pass) if name.startswith("side") else (ref_pass(), cand_pass())
        print(f"{name:<52}{time.perf_counter() - t0:>8.2f}")


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


def exported(package: Path | None, work: Path, precision: bool = False) -> Path:
    """The package to validate: the one given, or rmt-small exported into ``work`` (with
    ``precision``: PRECISION_PRESET exported and quantized, int8-qdq)."""
    if package is not None:
        return package
    from memx.exporter import export_preset

    name = PRECISION_PRESET if precision else PRESET
    out = work / f"{name}.memx"
    t0 = time.perf_counter()
    export_preset(name, out, verify_segments=0)
    print(f"exported {name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if not precision:
        return out
    from memx.calibration.quantize import quantize_package

    t0 = time.perf_counter()
    quantized = quantize_package(out, work / f"{name}-int8.memx", method="int8-qdq", progress=False).package.path
    print(f"quantized {name} (int8-qdq) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return Path(quantized)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1024, help="parity segments (memx validate --segments)")
    ap.add_argument("--decode-segments", type=int, default=DECODE_SEGMENTS, help="decode-check segments (memx validate --decode-segments; 0: none)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per contender; the table shows medians")
    ap.add_argument("--package", type=Path, help=f"a package to validate (default: {PRESET}, exported into a temp dir); a quantized one gets the precision check")
    ap.add_argument("--precision", action="store_true",
                    help=f"without --package: time the precision check of {PRECISION_PRESET} quantized to int8-qdq (exported and quantized into a temp dir)")
    ap.add_argument("--cli", action="store_true", help="also time the whole command in a fresh process")
    ap.add_argument("--baseline", default="", help="a source tree holding an older memx/ to time side by side (alternating)")
    ap.add_argument("--split", action="store_true", help="instead: where a segment's time goes (reference, candidate, compare), this tree, in this process "
                    "(a quantized package: the precision check's drift loop and task accuracy)")
    args = ap.parse_args()
    from memx.package.files import Package

    if args.split:
        with tempfile.TemporaryDirectory() as tmp:
            package = exported(args.package, Path(tmp), args.precision)
            (split if Package.open(package).manifest.precision == "fp32" else split_precision)(package, args.segments)
        return
    contenders = [("this tree", "")] + ([(f"baseline {args.baseline}", str(Path(args.baseline).resolve()))] if args.baseline else [])
    results: dict[str, dict[str, list[float]]] = {name: {} for name, _ in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        package = exported(args.package, Path(tmp), args.precision)
        manifest = Package.open(package).manifest
        for r in range(args.repeats):
            for name, src in contenders:
                got = run_worker(src, package, args.segments, args.decode_segments)
                if args.cli:
                    got["cli_s"] = run_cli(src, package, args.segments, args.decode_segments)
                for k, v in got.items():
                    results[name].setdefault(k, []).append(v)
                print(f"run {r + 1}/{args.repeats} {name}: " + ", ".join(f"{k} {int(v):x}" if k == "report" else f"{k} {v:.3g}" for k, v in got.items()), file=sys.stderr)
    quantized = manifest.precision != "fp32"
    decode = args.decode_segments if manifest.decode is not None else 0
    check = f"precision check ({manifest.precision} vs torch, task accuracy included)" if quantized else "parity"
    print(f"memx validate {manifest.preset or package.name}: {args.segments} segments, {check} + {decode} decode segments, batch 4; "
          f"median of {args.repeats}; {machine_text()}")
    columns = [("check_s", "check_package s")] + ([("task_s", "task acc. s")] if quantized else []) + ([("decode_s", "check_decode s")] if decode else [])
    columns += [("total_s", "in-process s")] + ([("cli_s", "CLI wall s")] if args.cli else [])
    print(f"{'contender':<40}" + "".join(f"{title:>17}" for _, title in columns))
    for name, _ in contenders:
        print(f"{name:<40}" + "".join(f"{statistics.median(results[name][k]):>17.1f}" for k, _ in columns))
    if args.baseline:
        base, new = results[contenders[1][0]], results[contenders[0][0]]
        print(f"{'speed-up (baseline / this tree)':<40}" + "".join(f"{statistics.median(base[k]) / statistics.median(new[k]):>16.2f}x" for k, _ in columns))
    prints = {fp for name, _ in contenders for fp in results[name]["report"]}
    print("reports: " + ("the same numbers in every run" if len(prints) == 1 else f"{len(prints)} different sets of numbers (fingerprints {', '.join(sorted(f'{int(p):x}' for p in prints))})"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--cli-worker":
        sys.exit(cli_worker(sys.argv[2], sys.argv[3:]))
    else:
        main()
