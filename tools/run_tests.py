#!/usr/bin/env python3
"""`make test`: every phase of the test run, timed, with the independent ones side by side.

    python3 tools/run_tests.py                    # what `make test` runs
    python3 tools/run_tests.py --all              # also the `slow` full-length checks (make test-all)
    python3 tools/run_tests.py --workers 1        # pytest in one process
    python3 tools/run_tests.py --budget 2700      # fail (with the table) past 45 minutes (.ci/run sets this)

Phases, in order (stdlib only: this runs before the virtual environment exists):

    deps       .venv with the pinned CPU torch and memx[dev]          make .venv/.memx-installed
    ops        libmemx_ops (optional: reference bodies without it)    make ops-optional
    cpp        libmemx, memx-run, the GoogleTest suite (Release)      make cpp
    package    the C++ suite's package, exported once into the test cache pytest shares
    then at the same time:
      pytest                 pytest-xdist, one worker and one thread per core
      cpp tests (plain)      GoogleTest on the Release build
      cpp asan build/tests   the same suite under AddressSanitizer + UBSan
      cpp install + embed    cmake --install, find_package(memx) example built and run
      aarch64 build/tests    the C++ cross-built for aarch64 (make cpp-aarch64), then run under
                             qemu-user: GoogleTest, tests/edge (parity with x86 Python, NEON
                             kernel, memx bundle) (make cpp-aarch64-test)

At the end it prints a table (wall seconds per phase, pytest's per-directory test seconds
summed over workers) and writes it to build/test-phases.json and build/test-phases.md.
Exit status: the first failing phase's, or 3 when the run took longer than --budget.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
TIMES_FILE = BUILD / "pytest-times.json"
PYTEST_SUMMARY = re.compile(r"^=*\s*\d+ (passed|failed|errors?)\b.* in [0-9.]+s")
DEADLINE_S = 85 * 60  # stop what still runs and print the table before CI's 90-minute limit


@dataclass
class Phase:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    prefix: bool = True  # prefix output lines with the phase name (not pytest's: CI reads its closing line)
    seconds: float = 0.0
    returncode: int | None = None  # None: not run
    started: float = 0.0  # seconds after the run began


@dataclass
class Run:
    began: float = field(default_factory=time.monotonic)
    phases: list[Phase] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    summaries: list[str] = field(default_factory=list)  # pytest's closing line

    def elapsed(self) -> float:
        return time.monotonic() - self.began


def make(*targets: str) -> list[str]:
    return ["make", "--no-print-directory", *targets]


def run_phase(run: Run, phase: Phase, deadline: float) -> int:
    """Run one phase, streaming its output with the phase name in front of each line."""
    phase.started = run.elapsed()
    env = {**os.environ, **phase.env}
    print(f"==> [{phase.name}] {shlex.join(phase.command)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(phase.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    killer = threading.Timer(max(1.0, deadline - run.elapsed()), proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            with run.lock:
                sys.stdout.write(f"[{phase.name}] {line}" if phase.prefix else line)
                if PYTEST_SUMMARY.match(line):
                    run.summaries.append(line.strip())
                sys.stdout.flush()
        phase.returncode = proc.wait()
    finally:
        killer.cancel()
    phase.seconds = time.monotonic() - t0
    with run.lock:
        run.phases.append(phase)
        verdict = "ok" if phase.returncode == 0 else f"FAILED (exit {phase.returncode})"
        print(f"==> [{phase.name}] {verdict} in {phase.seconds:.0f} s", flush=True)
    return phase.returncode


def run_chain(run: Run, chain: list[Phase], deadline: float, results: list[int]) -> None:
    """Phases that depend on each other, one after another; stops at the first failure."""
    for phase in chain:
        rc = run_phase(run, phase, deadline)
        if rc != 0:
            results.append(rc)
            return
    results.append(0)


def pytest_phase(python: str, workers: int, everything: bool, edge_apart: bool) -> Phase:
    cmd = [python, "-m", "pytest", "-q", "--durations=40", "-p", "no:cacheprovider"]
    if edge_apart:  # tests/edge runs in the aarch64 chain, after the cross build it needs
        cmd += ["--ignore=tests/edge"]
    if not everything:
        cmd += ["-m", "not slow"]
    env = {"MEMX_TEST_TIMES": str(TIMES_FILE)}
    if workers > 1:
        cmd += ["-n", str(workers)]
        env["MEMX_TEST_THREADS"] = "1"  # one thread per worker: ORT's spinning pools starve each other otherwise
    return Phase("pytest", cmd, env, prefix=False)


def cpp_chains(everything: bool) -> list[list[Phase]]:
    edge = {"MEMX_EDGE_PYTEST_ARGS": "" if everything else "-m 'not slow'"}
    return [
        [Phase("cpp tests (plain)", make("cpp-gtest"))],
        [Phase("cpp asan build", make("cpp-asan-build")), Phase("cpp asan tests", make("cpp-asan-tests")),
         Phase("cpp install + embed", make("cpp-embed"))],
        [Phase("aarch64 build", make("cpp-aarch64")), Phase("aarch64 tests (qemu)", make("cpp-aarch64-test"), edge)],
    ]


def render(run: Run, total: float, budget: float | None) -> str:
    lines = ["| phase | started at (s) | wall (s) | result |", "|---|---:|---:|---|"]
    for p in sorted(run.phases, key=lambda p: p.started):
        result = "ok" if p.returncode == 0 else f"exit {p.returncode}"
        lines.append(f"| {p.name} | {p.started:.0f} | {p.seconds:.0f} | {result} |")
    lines.append(f"| **total** | | **{total:.0f}** ({total / 60:.1f} min) | {'budget ' + format(budget, '.0f') + ' s' if budget else ''} |")
    if TIMES_FILE.is_file():
        times = json.loads(TIMES_FILE.read_text())
        lines += ["", "| pytest directory | tests | test seconds (summed over workers) |", "|---|---:|---:|"]
        for directory, t in sorted(times.items(), key=lambda kv: -kv[1]["seconds"]):
            lines.append(f"| {directory} | {t['tests']:.0f} | {t['seconds']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="also run the `slow` full-length checks")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pytest-xdist workers (default: one per core; 1 = no xdist)")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("MEMX_TEST_BUDGET_S", 0)) or None,
                    help="fail when the whole run takes longer (seconds; default $MEMX_TEST_BUDGET_S, none when unset)")
    ap.add_argument("--no-cpp", action="store_true", help="skip the C++ phases (pytest's cpp tests then skip with a reason)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run()
    python = str(ROOT / ".venv" / "bin" / "python")
    TIMES_FILE.unlink(missing_ok=True)
    setup = [Phase("deps", make(".venv/.memx-installed")), Phase("ops", make("ops-optional"))]
    if not args.no_cpp:
        setup.append(Phase("cpp", make("cpp")))
        setup.append(Phase("package", [python, "-m", "tests.package_cache", "rmt-tiny"]))
    failures: list[int] = []
    run_chain(run, setup, DEADLINE_S, failures)
    if failures[-1] == 0:
        chains = [[pytest_phase(python, args.workers, args.all, edge_apart=not args.no_cpp)]] + ([] if args.no_cpp else cpp_chains(args.all))
        results: list[int] = []
        threads = [threading.Thread(target=run_chain, args=(run, chain, DEADLINE_S, results)) for chain in chains]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failures += results
    return finish(run, failures, args.budget)


def finish(run: Run, failures: list[int], budget: float | None) -> int:
    """Print and write the phase table; the exit status (first failure, 3 over budget, else 0)."""
    total = run.elapsed()
    table = render(run, total, budget)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "test-phases.md").write_text(table + "\n")
    (BUILD / "test-phases.json").write_text(json.dumps({"total_s": total, "budget_s": budget, "phases": [
        {k: v for k, v in asdict(p).items() if k != "env"} for p in run.phases]}, indent=1))
    print("\n" + table + "\n", flush=True)
    failed = [rc for rc in failures if rc != 0]
    if failed:
        print(f"FAILED: {len(failed)} phase chain(s) failed (see above)", flush=True)
        code = failed[0]
    elif budget and total > budget:
        print(f"FAILED: the test run took {total:.0f} s ({total / 60:.1f} min), over its budget of {budget:.0f} s "
              f"({budget / 60:.0f} min). The table above says which phase grew.", flush=True)
        code = 3
    else:
        print(f"all phases passed in {total:.0f} s ({total / 60:.1f} min)", flush=True)
        code = 0
    for line in run.summaries:  # last, where CI looks for the test runner's closing line
        print(line, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
