"""Progress bars for long work (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_range(n: int, description: str, *, enabled: bool = True) -> Iterator[int]:
    if not enabled:
        yield from range(n)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=n)
        for i in range(n):
            yield i
            bar.advance(task)
