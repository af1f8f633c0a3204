"""Formatting for terminal reports (no heavy imports: the CLI loads it at start-up)."""

from __future__ import annotations


def format_shape(shape: list) -> str:
    """["batch", 16, 256] -> [batch, 16, 256]"""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
