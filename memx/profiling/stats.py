"""Latency statistics: percentiles (linear interpolation between order statistics, as
numpy's default), throughput, and the machine a measurement was taken on."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from memx.errors import InputError
from memx.plotting import describe_machine as machine  # noqa: F401  (what the numbers were measured on; every report's stamp says it)


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float

    @classmethod
    def of(cls, samples_ms: Any) -> "LatencyStats":
        x = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
        if x.size == 0:
            raise InputError("no latency samples to summarise", expected="at least one sample", actual=0)
        if not np.isfinite(x).all() or (x < 0).any():
            raise InputError("latency samples must be finite and non-negative", expected=">= 0", actual=float(x[~np.isfinite(x) | (x < 0)][0]))
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(int(x.size), float(x.mean()), float(p50), float(p90), float(p99), float(x.max()), float(x.min()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float
    segments_per_s: float  # stream-segments per second: batch x steps / time

    @classmethod
    def of(cls, samples_ms: Any, *, batch: int, tokens_per_step: int) -> "Throughput":
        """From per-step wall times: total work over total time (not 1/mean of rates)."""
        total_s = float(np.sum(samples_ms)) / 1e3
        steps = len(samples_ms)
        if total_s <= 0:
            return cls(float("inf"), float("inf"))
        return cls(tokens_per_step * steps / total_s, batch * steps / total_s)


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
