"""Helpers shared by the benchmark scripts: memory of this process, one worker per cell."""

from __future__ import annotations

import json
import subprocess
import sys

from memx.profiling.stats import current_rss_mb, peak_rss_mb  # noqa: F401  (used by the benchmark scripts)


def run_worker(script: str, args: list[str]) -> dict:
    """Run ``script --worker ARGS`` in a fresh process (its peak RSS is its own); its last
    stdout line is a JSON object."""
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
