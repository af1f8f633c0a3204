"""Stream replay with per-segment timing: several contenders (backend, precision, device)
in one process, in interleaved rounds so machine drift hits all of them alike.

A contender is written ``backend[:precision][@device][+mode]``: ``onnxruntime``,
``onnxruntime:int8-dynamic``, ``torch@cuda``, ``onnxruntime:fp16@cuda``, ``torch@cuda+graphs``.
A precision other than the package's own is made on the fly with ``memx quantize`` into a
scratch directory. Modes (``memx.runtimes.resident``): ``host`` (state through the host every
step), ``resident`` (state in device buffers; the default off the CPU), ``graphs`` (resident,
each step a replayed CUDA graph).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memx.errors import InputError
from memx.package.files import Package
from memx.inspection import state_bytes_per_stream
from memx import __version__
from memx.plotting import utc_now
from memx.profiling.stats import LatencyStats, Throughput, current_rss_mb, machine, peak_rss_mb

_SPEC = re.compile(r"^(?P<backend>[a-z_]+)(?::(?P<precision>[a-z0-9-]+))?(?:@(?P<device>[a-z0-9:]+))?(?:\+(?P<mode>[a-z]+))?$")
MODES: dict[str, dict[str, Any]] = {"host": {"resident": False}, "resident": {"resident": True}, "graphs": {"resident": True, "cuda_graphs": True},
                                   "fused": {"graph_passes": "auto"},  # onnxruntime: with memx's graph passes (fused CPU kernels) in memory
                                   "exported": {"cpu_build": False}}  # onnxruntime: the graphs as exported, not the package's CPU build
BACKEND_MODES = {"fused": "onnxruntime", "exported": "onnxruntime"}  # modes only one backend has
REPORT_FORMAT = "memx.profile"
REPORT_VERSION = 1


@dataclass(frozen=True)
class Contender:
    backend: str
    precision: str | None = None  # None: the package as it is
    device: str = "cpu"
    mode: str | None = None  # None: the runtime's default (resident off the CPU)

    @classmethod
    def parse(cls, spec: str) -> "Contender":
        m = _SPEC.match(spec.strip())
        if not m:
            raise InputError("cannot read contender", expected="backend[:precision][@device][+mode], e.g. onnxruntime:int8-dynamic or torch@cuda+graphs", actual=spec)
        if m["mode"] is not None and m["mode"] not in MODES:
            raise InputError("unknown contender mode", expected=sorted(MODES), actual=m["mode"])
        if m["mode"] in BACKEND_MODES and m["backend"] != BACKEND_MODES[m["mode"]]:
            raise InputError(f"contender mode +{m['mode']} is a mode of {BACKEND_MODES[m['mode']]}", expected=f"{BACKEND_MODES[m['mode']]}+{m['mode']}", actual=spec)
        return cls(m["backend"], m["precision"], m["device"] or "cpu", m["mode"])

    @property
    def name(self) -> str:
        return (self.backend + (f":{self.precision}" if self.precision else "") + (f"@{self.device}" if self.device != "cpu" else "")
                + (f"+{self.mode}" if self.mode else ""))

    @property
    def stream_options(self) -> dict[str, Any]:
        return dict(MODES[self.mode]) if self.mode else {}


def parse_contenders(specs: str | list[str]) -> list[Contender]:
    items = [s for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    contenders = [Contender.parse(s) for s in items]
    names = [c.name for c in contenders]
    if not contenders or len(set(names)) != len(names):
        raise InputError("contenders must be given once each", expected="a non-empty list of distinct contenders", actual=names)
    return contenders


def round_order(names: list[str], r: int) -> list[str]:
    """Who steps in round ``r``: the list rotated by r, so each goes first equally often."""
    k = r % len(names)
    return names[k:] + names[:k]


@dataclass
class ContenderResult:
    name: str
    backend: str
    precision: str
    device: str
    latency: LatencyStats
    throughput: Throughput
    samples_ms: list[float]
    state_bytes_per_step: int  # state read + written per step, all streams of the batch
    rss_mb_after_open: float
    device_memory_mb: float | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    gpu_latency: LatencyStats | None = None  # CUDA-event time between the step's start and end on the device

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        d = {"name": self.name, "backend": self.backend, "precision": self.precision, "device": self.device,
             "latency_ms": {"p50": self.latency.p50_ms, "p90": self.latency.p90_ms, "p99": self.latency.p99_ms, "max": self.latency.max_ms,
                            "mean": self.latency.mean_ms, "min": self.latency.min_ms, "n": self.latency.n},
             "throughput": {"tokens_per_s": self.throughput.tokens_per_s, "segments_per_s": self.throughput.segments_per_s},
             "state_bytes_per_step": self.state_bytes_per_step, "rss_mb_after_open": self.rss_mb_after_open,
             "device_memory_mb": self.device_memory_mb, "runtime": self.runtime,
             "gpu_latency_ms": None if self.gpu_latency is None else {"p50": self.gpu_latency.p50_ms, "p90": self.gpu_latency.p90_ms,
                                                                      "p99": self.gpu_latency.p99_ms, "max": self.gpu_latency.max_ms}}
        if samples:
            d["samples_ms"] = self.samples_ms
        return d


@dataclass
class ProfileReport:
    package: str
    family: str
    batch: int
    segment_len: int
    segments: int
    warmup: int
    seed: int
    contenders: list[ContenderResult]
    peak_rss_mb: float
    machine: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. tegrastats summary
    created: str = field(default_factory=utc_now)  # when it was measured, "2026-12-06 07:31:02 UTC"
    memx_version: str = __version__

    @property
    def baseline(self) -> ContenderResult:
        return self.contenders[0]

    def ratios(self) -> dict[str, dict[str, float]]:
        """Speed-up of each contender over the first (baseline p50 / contender p50; > 1 is faster)."""
        b = self.baseline.latency
        return {c.name: {"p50": b.p50_ms / c.latency.p50_ms if c.latency.p50_ms else float("inf"),
                         "p99": b.p99_ms / c.latency.p99_ms if c.latency.p99_ms else float("inf")} for c in self.contenders}

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "memx_version": self.memx_version, "created": self.created, "machine": self.machine,
                "package": self.package, "family": self.family,
                "config": {"batch": self.batch, "segment_len": self.segment_len, "segments": self.segments, "warmup": self.warmup, "seed": self.seed},
                "baseline": self.baseline.name, "ratios": self.ratios(), "peak_rss_mb": self.peak_rss_mb,
                "contenders": [c.to_dict(samples=samples) for c in self.contenders], **({"extra": self.extra} if self.extra else {})}


def _state_bytes(pkg: Package, batch: int) -> int:
    return 2 * batch * state_bytes_per_stream(pkg.manifest)  # read and written


def _package_for(pkg: Package, c: Contender, scratch: Path, progress: bool) -> Package:
    if c.precision is None or c.precision == pkg.manifest.precision:
        return pkg
    from memx.calibration import quantize_package

    out = scratch / f"{pkg.path.name}.{c.precision}.memx"
    if out.exists():
        return Package.open(out)
    return quantize_package(pkg, out, method=c.precision, progress=progress).package


def profile(
    package: str | Path | Package,
    contenders: str | list[str] = "onnxruntime",
    *,
    batch: int = 1,
    segment_len: int | None = None,
    segments: int = 200,
    warmup: int = 10,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
    progress: bool = True,
    scratch: str | Path | None = None,
    backend_options: dict[str, dict[str, Any]] | None = None,
) -> ProfileReport:
    """Replay ``segments`` full segments of random tokens (after ``warmup``) through every
    contender, one stream batch each, interleaved; time each step with ``timer``."""
    from memx import runtimes
    from memx.progress import progress_range

    pkg = package if isinstance(package, Package) else Package.open(package)
    m = pkg.manifest
    seg = segment_len or m.segment["max"]
    if not m.segment["min"] <= seg <= m.segment["max"]:
        raise InputError("segment length outside the package's limits", expected=f"{m.segment['min']}..{m.segment['max']}", actual=seg)
    if batch < 1 or segments < 1 or warmup < 0:
        raise InputError("profile needs batch >= 1, segments >= 1, warmup >= 0", expected="positive sizes", actual={"batch": batch, "segments": segments, "warmup": warmup})
    specs = parse_contenders(contenders)
    with tempfile.TemporaryDirectory(prefix="memx-profile-") as tmp:
        work = Path(scratch) if scratch else Path(tmp)
        streams, rss, described, precision = {}, {}, {}, {}
        for c in specs:
            p = _package_for(pkg, c, work, progress)
            rt = runtimes.open(p, backend=c.backend, device=c.device, **c.stream_options, **(backend_options or {}).get(c.name, {}))
            streams[c.name] = rt.stream(batch)
            rss[c.name], described[c.name], precision[c.name] = current_rss_mb(), rt.describe(), p.manifest.precision
        rng = np.random.default_rng(seed)
        names = [c.name for c in specs]
        samples: dict[str, list[float]] = {n: [] for n in names}
        events = {c.name: CudaEvents() for c in specs if c.device.startswith("cuda") and CudaEvents.available()}
        for r in progress_range(warmup + segments, f"profile {', '.join(names)}", enabled=progress):
            tokens = rng.integers(0, m.vocab_size, size=(batch, seg))
            extras = m.sample_inputs(rng, batch, seg)
            for name in round_order(names, r):
                ev = events.get(name)
                if ev is not None:
                    ev.start()
                t0 = timer()
                streams[name].step(tokens, **extras)
                dt = timer() - t0
                if ev is not None:
                    ev.stop(keep=r >= warmup)
                if r >= warmup:
                    samples[name].append(dt * 1e3)
    results = []
    for c in specs:
        x = samples[c.name]
        results.append(ContenderResult(c.name, c.backend, precision[c.name], c.device, LatencyStats.of(x), Throughput.of(x, batch=batch, tokens_per_step=batch * seg),
                                       x, _state_bytes(pkg, batch), rss[c.name], _device_memory_mb(c), described[c.name],
                                       events[c.name].stats() if c.name in events else None))
    return ProfileReport(str(pkg.path), m.family, batch, seg, segments, warmup, seed, results, peak_rss_mb(), machine())


class CudaEvents:
    """CUDA events recorded on the current stream around each step (torch's CUDA runtime):
    device-side time of the step, read after the run so timing adds no synchronisation."""

    @staticmethod
    def available() -> bool:
        try:
            import torch

            return torch.cuda.is_available()
        except ImportError:
            return False

    def __init__(self) -> None:
        self.pairs: list[tuple[Any, Any]] = []
        self._open: Any = None

    def start(self) -> None:
        import torch

        self._open = torch.cuda.Event(enable_timing=True)
        self._open.record()

    def stop(self, *, keep: bool) -> None:
        import torch

        end = torch.cuda.Event(enable_timing=True)
        end.record()
        if keep:
            self.pairs.append((self._open, end))

    def stats(self) -> LatencyStats | None:
        import torch

        if not self.pairs:
            return None
        torch.cuda.synchronize()
        return LatencyStats.of([a.elapsed_time(b) for a, b in self.pairs])


def _device_memory_mb(c: Contender) -> float | None:
    if c.backend == "torch" and c.device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return None
