"""Progress on long work: a bar with elapsed time and ETA on a terminal, a plain line now and then
when stderr is a pipe or a file (CI logs, `| tee`), nothing under --quiet/--json.

    for i in progress_range(n, "validate onnxruntime", unit="segments"): ...
"""

from __future__ import annotations

import sys
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_MIN_INTERVAL_S = 5.0  # a plain line at most this often...
PLAIN_MAX_INTERVAL_S = 30.0  # ...and at least this often, or at every further 10% done

_ENABLED = True


def configure(*, enabled: bool) -> None:
    """Turn every progress display on or off (the CLI's --quiet and --json turn it off)."""
    global _ENABLED
    _ENABLED = enabled


def is_enabled() -> bool:
    return _ENABLED


def format_seconds(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(description: str, done: int, total: int, elapsed: float, unit: str = "") -> str:
    """One plain progress line: 'validate: 256/1024 segments (25%), 1m02s elapsed, ETA 3m06s'."""
    share = done / total if total else 1.0
    eta = elapsed * (total - done) / done if done else float("nan")
    eta_text = format_seconds(eta) if done else "?"
    return f"{description}: {done}/{total}{' ' + unit if unit else ''} ({share:.0%}), {format_seconds(elapsed)} elapsed, ETA {eta_text}"


def progress_range(n: int, description: str, *, enabled: bool = True, unit: str = "") -> Iterator[int]:
    if not (enabled and _ENABLED) or n <= 0:
        yield from range(n)
        return
    if sys.stderr.isatty():
        yield from _bar_range(n, description)
    else:
        yield from _plain_range(n, description, unit)


def _bar_range(n: int, description: str) -> Iterator[int]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=n)
        for i in range(n):
            yield i
            bar.advance(task)


def _plain_range(n: int, description: str, unit: str) -> Iterator[int]:
    t0 = last = time.perf_counter()
    next_share = 0.1
    for i in range(n):
        yield i
        now = time.perf_counter()
        done = i + 1
        due = (done / n >= next_share and now - last >= PLAIN_MIN_INTERVAL_S) or now - last >= PLAIN_MAX_INTERVAL_S
        if due and done < n:
            print(progress_line(description, done, n, now - t0, unit), file=sys.stderr, flush=True)
            last = now
            next_share = done / n + 0.1
    if time.perf_counter() - t0 >= PLAIN_MIN_INTERVAL_S:
        print(progress_line(description, n, n, time.perf_counter() - t0, unit), file=sys.stderr, flush=True)


class Stopwatch:
    """Messages of multi-stage work (export, build) stamped with the time since the start."""

    def __init__(self, console: Console | None = None) -> None:
        self.t0 = time.perf_counter()
        self.console = console or Console(stderr=True, soft_wrap=True)

    def __call__(self, message: str) -> None:
        if _ENABLED:
            self.console.print(f"[dim][{format_seconds(time.perf_counter() - self.t0):>6}] {message}…[/]", highlight=False)
