"""Latency profiling of packages over streams (``memx profile``): per-segment percentiles,
throughput, memory, state traffic; several backends/precisions compared in interleaved
rounds; JSON/CSV/HTML reports; Jetson tegrastats sampling."""

from memx.profiling.runner import Contender, ProfileReport, parse_contenders, profile, round_order
from memx.profiling.stats import LatencyStats, Throughput, machine

__all__ = ["Contender", "LatencyStats", "ProfileReport", "Throughput", "machine", "parse_contenders", "profile", "round_order"]
