"""Helpers shared by the benchmark scripts: memory of this process, one worker per cell."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux


def run_worker(script: str, args: list[str]) -> dict:
    """Run ``script --worker ARGS`` in a fresh process (its peak RSS is its own); its last
    stdout line is a JSON object."""
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
