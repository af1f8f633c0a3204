"""Per-segment cost versus history length: the memory model (constant state) against a
plain Transformer of the same width and depth that keeps the whole history in a KV cache
(``memx.models.kvcache``, exported the same way).

The memory model really consumes the history: one stream is advanced through each
history length in turn and timed there. The baseline is exported once per history length
with a cache of that many tokens; its cost depends on the cache's size, not its content
(attention is computed over every slot and masked), so its stream starts from a full cache
restored from a snapshot instead of replaying the history.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memx.errors import InputError
from memx.package.files import Package
from memx.inspection import state_bytes_per_stream
from memx.profiling.runner import round_order
from memx.profiling.stats import LatencyStats, machine, peak_rss_mb

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def parse_histories(text: str) -> list[int]:
    """"1k,4k,16k,64k" -> [1024, 4096, 16384, 65536] (k = 1024 tokens, m = 1024²)."""
    out = []
    for item in text.split(","):
        m = _SIZE.match(item.strip())
        if not m:
            raise InputError("cannot read history length", expected="a token count like 4096, 4k or 1m", actual=item)
        value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()]
        out.append(int(value))
    if not out or sorted(set(out)) != out or out[0] < 1:
        raise InputError("history lengths must be increasing and positive", expected="e.g. 1k,4k,16k", actual=out)
    return out


@dataclass
class ScalingPoint:
    history: int  # tokens consumed before the timed segments
    memory: LatencyStats
    baseline: LatencyStats | None
    memory_state_bytes: int  # per stream
    baseline_state_bytes: int | None


@dataclass
class ScalingReport:
    package: str
    family: str
    batch: int
    segment_len: int
    segments: int
    points: list[ScalingPoint]
    baseline_config: dict[str, Any] | None
    peak_rss_mb: float
    machine: dict[str, Any] = field(default_factory=dict)

    def memory_growth(self) -> list[float]:
        """p50 at each history / p50 at the first: ~1 for a constant-cost memory model."""
        first = self.points[0].memory.p50_ms
        return [p.memory.p50_ms / first for p in self.points]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "memx.profile.scaling", "version": 1, "package": self.package, "family": self.family, "batch": self.batch,
                "segment_len": self.segment_len, "segments": self.segments, "baseline_config": self.baseline_config,
                "peak_rss_mb": self.peak_rss_mb, "machine": self.machine, "memory_growth": self.memory_growth(),
                "points": [{"history": p.history, "memory_ms": asdict(p.memory), "baseline_ms": asdict(p.baseline) if p.baseline else None,
                            "baseline_over_memory_p50": (p.baseline.p50_ms / p.memory.p50_ms) if p.baseline else None,
                            "memory_state_bytes": p.memory_state_bytes, "baseline_state_bytes": p.baseline_state_bytes} for p in self.points]}


def baseline_config(pkg: Package, history: int, segment_len: int) -> dict[str, Any]:
    """The full-history Transformer matching the package's model: same vocabulary, width,
    heads, depth and feed-forward size."""
    c = pkg.manifest.config
    missing = [k for k in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff") if k not in c]
    if missing:
        raise InputError("the package's config lacks what the baseline needs", expected="vocab_size, d_model, n_heads, n_layers, d_ff", actual=f"missing {missing}")
    return {"vocab_size": c["vocab_size"], "d_model": c["d_model"], "n_heads": c["n_heads"], "n_layers": c["n_layers"], "d_ff": c["d_ff"],
            "max_segment_len": segment_len, "history": history}


def _full_cache_stream(rt: Any, batch: int, rng: np.random.Generator) -> Any:
    """A baseline stream whose cache is full (every slot valid), restored from a snapshot."""
    from memx.runtimes.base import StreamState

    states = {}
    for name, (shape, dtype) in rt.state_schema.items():
        states[name] = np.ones((batch, *shape), dtype) if name == "valid" else rng.standard_normal((batch, *shape)).astype(dtype) * 0.1
    stream = rt.stream(batch)
    stream.restore(rt.snapshot_of(StreamState(states, np.zeros(batch, dtype=bool), 0)))
    return stream


# each history point first replays its whole history, so the timed part stays short
SCALING_MAX_SEGMENTS, SCALING_MAX_WARMUP = 50, 5


def scaling_budget(segments: int, warmup: int) -> tuple[int, int]:
    """The timed and warm-up segments per history point for a request of ``segments``/``warmup``
    (``memx profile --history``): capped at 50 and 5."""
    return min(segments, SCALING_MAX_SEGMENTS), min(warmup, SCALING_MAX_WARMUP)


def scaling(
    package: str | Path | Package,
    histories: list[int] | str,
    *,
    batch: int = 1,
    segment_len: int | None = None,
    segments: int = 20,
    warmup: int = 3,
    with_baseline: bool = True,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
    progress: bool = True,
) -> ScalingReport:
    from memx import runtimes
    from memx.exporter import export
    from memx.models import build_model
    from memx.progress import progress_range

    pkg = package if isinstance(package, Package) else Package.open(package)
    m = pkg.manifest
    hs = parse_histories(histories) if isinstance(histories, str) else list(histories)
    seg = segment_len or m.segment["max"]
    if not m.segment["min"] <= seg <= m.segment["max"]:
        raise InputError("segment length outside the package's limits", expected=f"{m.segment['min']}..{m.segment['max']}", actual=seg)
    rng = np.random.default_rng(seed)
    memory = runtimes.open(pkg, backend="onnxruntime").stream(batch)
    consumed = 0
    points = []
    with tempfile.TemporaryDirectory(prefix="memx-scaling-") as tmp:
        for h in hs:
            steps = -(-(h - consumed) // seg)
            for _ in progress_range(steps, f"memory model: consume history up to {h:,} tokens", enabled=progress):
                memory.step(rng.integers(0, m.vocab_size, size=(batch, seg)), **m.sample_inputs(rng, batch, seg))
            consumed += steps * seg
            contenders: dict[str, Any] = {"memory": memory}
            base_bytes = None
            if with_baseline:
                cfg = baseline_config(pkg, h, seg)
                base_pkg = export(build_model("kvcache", cfg), Path(tmp) / f"kv{h}.memx", preset=f"kvcache@{h}", verify_segments=0)
                base_rt = runtimes.open(base_pkg, backend="onnxruntime")
                contenders["baseline"] = _full_cache_stream(base_rt, batch, rng)
                base_bytes = state_bytes_per_stream(base_pkg.manifest)
            samples: dict[str, list[float]] = {k: [] for k in contenders}
            for r in progress_range(warmup + segments, f"time at history {h:,}", enabled=progress):
                tokens = rng.integers(0, m.vocab_size, size=(batch, seg))
                extras = {"memory": m.sample_inputs(rng, batch, seg)}  # the kv-cache baseline takes tokens only
                for name in round_order(list(contenders), r):
                    t0 = timer()
                    contenders[name].step(tokens, **extras.get(name, {}))
                    dt = timer() - t0
                    if r >= warmup:
                        samples[name].append(dt * 1e3)
            consumed += (warmup + segments) * seg
            points.append(ScalingPoint(h, LatencyStats.of(samples["memory"]), LatencyStats.of(samples["baseline"]) if with_baseline else None,
                                       state_bytes_per_stream(m), base_bytes))
    return ScalingReport(str(pkg.path), m.family, batch, seg, segments, points, baseline_config(pkg, 0, seg) if with_baseline else None,
                         peak_rss_mb(), machine())
