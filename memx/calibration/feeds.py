"""Calibration inputs from rollouts of the fp32 package over real streams.

Quantization tools calibrate on static snapshots: one call, usually with a zero state, so
the ranges they see are those of the first segment. Here the fp32 package itself runs over
long streams (the user's tokens, a zoo task's episodes, or random tokens) and the inputs of
every graph, **state inputs included**, are recorded at depths stratified over the stream:
early, middle and late segments, so the calibrated ranges cover the memory as it is after
hundreds of segments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memx.errors import CalibrationError
from memx.package.files import Package
from memx.validation.sources import TokenSource

log = logging.getLogger("memx.calibration")

DEPTH_MODES = ("rollout", "first")


# --- rollouts --------------------------------------------------------------------------------
def stratified_depths(horizon: int, n: int) -> list[int]:
    """``n`` distinct segment indices in [0, horizon): half log-spaced (dense early), half
    evenly spaced, always including the first and the last."""
    if n >= horizon:
        return list(range(horizon))
    log_part = np.unique(np.round(np.geomspace(1, horizon, max(n // 2, 2))).astype(int) - 1)
    chosen = set(log_part.tolist()) | set(np.linspace(0, horizon - 1, max(n - len(log_part), 2)).round().astype(int).tolist())
    rest = [d for d in range(horizon) if d not in chosen]
    fill = np.linspace(0, len(rest) - 1, max(n - len(chosen), 0)).round().astype(int) if rest else []
    chosen |= {rest[i] for i in fill}
    return sorted(chosen)[:n] if len(chosen) > n else sorted(chosen)


@dataclass
class CalibrationSet:
    """Recorded inputs of every graph, one entry per recorded step (a batch of streams)."""

    feeds: dict[str, list[dict[str, np.ndarray]]]  # graph name -> feeds
    depths: list[int]  # segment index of each recorded step
    source: str
    mode: str  # "rollout" or "first"
    streams: int
    horizon: int
    segment_len: int
    state_absmax: dict[str, list[float]] = field(default_factory=dict)  # state name -> absmax per recorded step

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "mode": self.mode, "segments": len(self.depths), "streams": self.streams, "horizon": self.horizon,
                "segment_len": self.segment_len, "depths": {"min": min(self.depths), "max": max(self.depths)},
                "state_absmax": {k: float(max(v)) for k, v in self.state_absmax.items()}}


def collect_feeds(
    package: Package,
    source: TokenSource,
    *,
    segments: int = 128,
    horizon: int | None = None,
    streams: int = 8,
    segment_len: int | None = None,
    mode: str = "rollout",
    seed: int = 0,
    progress: bool = True,
) -> CalibrationSet:
    """Roll the fp32 package (ONNX Runtime) over ``streams`` streams for ``horizon`` segments
    and record the inputs of every graph at ``segments`` stratified depths.

    ``mode="first"`` records first segments only (fresh streams, zero state): what snapshot
    calibration sees; kept to show the difference."""
    from memx import runtimes
    from memx.progress import progress_range

    if mode not in DEPTH_MODES:
        raise CalibrationError("unknown calibration depth mode", expected=list(DEPTH_MODES), actual=mode)
    if segments < 1 or streams < 1:
        raise CalibrationError("calibration needs at least one segment and one stream", expected=">= 1", actual={"segments": segments, "streams": streams})
    m = package.manifest
    seg = segment_len or m.segment["max"]
    if not m.segment["min"] <= seg <= m.segment["max"]:
        raise CalibrationError("calibration segment length outside the package's limits", expected=f"{m.segment['min']}..{m.segment['max']}", actual=seg)
    horizon = horizon or max(2 * segments, 64)
    if mode == "rollout" and horizon < segments:
        raise CalibrationError("calibration horizon shorter than the number of recorded segments", expected=f">= {segments}", actual=horizon)
    rt = runtimes.open(package, backend="onnxruntime")
    rng = np.random.default_rng(seed)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {g.name: [] for g in m.graphs}
    recording = [False]

    def observe(graph: Any, graph_feeds: dict[str, np.ndarray]) -> None:
        if recording[0]:
            feeds[graph.name].append({k: np.array(v, copy=True) for k, v in graph_feeds.items()})

    rt.graph_observer = observe
    depths: list[int] = []
    absmax: dict[str, list[float]] = {s.name: [] for s in m.state}
    if mode == "rollout":
        tokens = source.streams(streams, horizon * seg, rng)  # (B, horizon * S)
        keep = set(stratified_depths(horizon, segments))
        stream = rt.stream(streams)
        for d in progress_range(horizon, f"calibration rollout ({len(keep)} of {horizon} segments kept)", enabled=progress):
            recording[0] = d in keep
            if recording[0]:
                depths.append(d)
                for name, v in stream.state.items():
                    absmax[name].append(float(np.abs(v).max()))
            stream.step(tokens[:, d * seg : (d + 1) * seg], **m.sample_inputs(rng, streams, seg))
    else:
        tokens = source.streams(streams, segments * seg, rng)
        for d in progress_range(segments, "calibration (first segments only)", enabled=progress):
            recording[0] = True
            stream = rt.stream(streams)  # fresh: zero state, reset
            depths.append(0)
            for name in absmax:
                absmax[name].append(0.0)
            stream.step(tokens[:, d * seg : (d + 1) * seg], **m.sample_inputs(rng, streams, seg))
    rt.graph_observer = None
    return CalibrationSet(feeds, depths, source.describe(), mode, streams, horizon if mode == "rollout" else 1, seg, absmax)
