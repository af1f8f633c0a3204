"""NVIDIA Jetson ``tegrastats`` output: a parser for its lines and a sampler that runs it
beside a measurement.

Lines differ across boards and JetPack releases (an optional timestamp, power rails with or
without "mW", GR3D_FREQ as ``N%@F`` or ``N%@[F,F]``, CPUs that are ``off``); the parser reads
every field it knows and ignores the rest. A line without RAM and CPU fields is not a
tegrastats line: ``parse_line`` returns None and summaries count it as malformed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_TIME = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s+")
INVALID_TEMP = -256.0  # tegrastats reports sensors that are off as -256C


@dataclass
class TegraSample:
    ram_used_mb: int
    ram_total_mb: int
    cpu_load: list[float | None]  # percent per core, None for cores that are off
    cpu_freq_mhz: list[int | None]
    swap_used_mb: int | None = None
    emc_load: float | None = None  # external memory controller, percent
    emc_freq_mhz: int | None = None
    gpu_load: float | None = None  # GR3D, percent
    gpu_freq_mhz: list[int] = field(default_factory=list)
    temperatures_c: dict[str, float] = field(default_factory=dict)
    power_mw: dict[str, int] = field(default_factory=dict)  # instantaneous per rail
    power_avg_mw: dict[str, int] = field(default_factory=dict)
    timestamp: str | None = None


def parse_line(line: str) -> TegraSample | None:
    """One tegrastats line, or None when the line is not one."""
    text = line.strip()
    ram, cpu = _RAM.search(text), _CPU.search(text)
    if ram is None or cpu is None:
        return None
    loads: list[float | None] = []
    freqs: list[int | None] = []
    for entry in cpu.group(1).split(","):
        entry = entry.strip()
        m = re.fullmatch(r"(\d+)%(?:@(\d+))?", entry)
        if m is None:  # "off" or unknown
            loads.append(None)
            freqs.append(None)
        else:
            loads.append(float(m.group(1)))
            freqs.append(int(m.group(2)) if m.group(2) else None)
    sample = TegraSample(int(ram.group(1)), int(ram.group(2)), loads, freqs)
    if (t := _TIME.match(text)) is not None:
        sample.timestamp = t.group(1)
    if (s := _SWAP.search(text)) is not None:
        sample.swap_used_mb = int(s.group(1))
    if (e := _EMC.search(text)) is not None:
        sample.emc_load = float(e.group(1))
        sample.emc_freq_mhz = int(e.group(2)) if e.group(2) else None
    if (g := _GR3D.search(text)) is not None:
        sample.gpu_load = float(g.group(1))
        sample.gpu_freq_mhz = [int(f) for f in g.group(2).split(",") if f] if g.group(2) else []
    rest = _CPU.sub(" ", text)  # CPU@44C is a temperature, the core list is not
    for name, value in _TEMP.findall(rest):
        v = float(value)
        if v != INVALID_TEMP:
            sample.temperatures_c[name] = v
    for name, now, avg in _RAIL.findall(rest):
        if name in ("RAM", "SWAP"):
            continue
        sample.power_mw[name] = int(now)
        sample.power_avg_mw[name] = int(avg)
    return sample


def summarize(lines: list[str]) -> dict[str, Any]:
    """Means and maxima over the parsed lines; malformed lines are counted, not fatal."""
    samples = [s for s in (parse_line(x) for x in lines if x.strip()) if s is not None]
    malformed = sum(1 for x in lines if x.strip()) - len(samples)
    out: dict[str, Any] = {"samples": len(samples), "malformed_lines": malformed}
    if not samples:
        return out

    def stat(values: list[float]) -> dict[str, float] | None:
        return {"mean": float(np.mean(values)), "max": float(np.max(values))} if values else None

    out["ram_used_mb"] = stat([s.ram_used_mb for s in samples])
    out["gpu_load_pct"] = stat([s.gpu_load for s in samples if s.gpu_load is not None])
    out["emc_load_pct"] = stat([s.emc_load for s in samples if s.emc_load is not None])
    cpu = [np.mean([v for v in s.cpu_load if v is not None]) for s in samples if any(v is not None for v in s.cpu_load)]
    out["cpu_load_pct"] = stat(cpu)
    rails = sorted({r for s in samples for r in s.power_mw})
    out["power_mw"] = {r: stat([s.power_mw[r] for s in samples if r in s.power_mw]) for r in rails}
    sensors = sorted({t for s in samples for t in s.temperatures_c})
    out["temperature_c"] = {t: stat([s.temperatures_c[t] for s in samples if t in s.temperatures_c]) for t in sensors}
    out["gpu_freq_mhz"] = samples[-1].gpu_freq_mhz
    out["emc_freq_mhz"] = samples[-1].emc_freq_mhz
    return out


class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` while in use and keeps its lines.

        with TegrastatsSampler() as t:
            ... measure ...
        summary = t.summary()
    """

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats"):
        self.interval_ms = interval_ms
        self.executable = shutil.which(executable)
        self.lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self.executable is not None

    def __enter__(self) -> "TegrastatsSampler":
        if self.available:
            self._proc = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            if self._reader is not None:
                self._reader.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        return {"available": self.available, **summarize(self.lines)}


def jetson_clocks() -> dict[str, Any]:
    """nvpmodel mode and whether jetson_clocks pinned the clocks, where the tools exist."""
    info: dict[str, Any] = {}
    if shutil.which("nvpmodel"):
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
        info["nvpmodel"] = out.stdout.strip()
    if shutil.which("jetson_clocks"):
        out = subprocess.run(["jetson_clocks", "--show"], capture_output=True, text=True, timeout=10)
        info["jetson_clocks"] = out.stdout.strip()[:2000]
    return info
