"""Hand a built TensorRT engine to ``trtexec`` with the package's shapes and read its
performance summary, so its figures sit beside memx's stream timings.

trtexec times one static call shape on random inputs and knows nothing of streams: the
state inputs get random values and nothing is carried. Its numbers are the engine's
compute floor; ``memx profile`` measures the stream.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from memx.errors import BackendUnavailableError, InputError
from memx.package.manifest import GraphInfo, Manifest

_STATS = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = ([\d.]+) ms")
_LINES = {"Latency": "latency_ms", "GPU Compute Time": "gpu_compute_ms", "Enqueue Time": "enqueue_ms", "H2D Latency": "h2d_ms", "D2H Latency": "d2h_ms"}
_THROUGHPUT = re.compile(r"Throughput: ([\d.]+) qps")


def shapes_argument(graph: GraphInfo, *, batch: int, segment_len: int) -> str:
    """--shapes value for a graph: every input with batch and segment made concrete."""
    parts = []
    for t in graph.inputs:
        dims = [batch if d == "batch" else segment_len if d == "segment" else d for d in t.shape]
        if not all(isinstance(d, int) for d in dims):
            raise InputError(f"input {t.name!r} has a dim trtexec cannot be given", expected="batch, segment or fixed dims", actual=t.shape)
        parts.append(f"{t.name}:{'x'.join(str(d) for d in dims)}" if dims else f"{t.name}:1")
    return ",".join(parts)


def trtexec_command(engine: str | Path, graph: GraphInfo, *, batch: int, segment_len: int, iterations: int = 200, executable: str = "trtexec") -> list[str]:
    return [executable, f"--loadEngine={engine}", f"--shapes={shapes_argument(graph, batch=batch, segment_len=segment_len)}",
            f"--iterations={iterations}", "--warmUp=200", "--avgRuns=1"]


def parse_trtexec(text: str) -> dict[str, Any]:
    """The performance summary of a trtexec log (TensorRT 8.x-11.x wording)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if (m := _THROUGHPUT.search(line)) is not None:
            out["throughput_qps"] = float(m.group(1))
            continue
        for label, key in _LINES.items():
            if f"] {label}: " in line or line.lstrip().startswith(f"{label}: "):
                stats = {}
                for name, pct, value in _STATS.findall(line):
                    stats[f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else name] = float(value)
                if stats:
                    out[key] = stats
    if "latency_ms" not in out and "gpu_compute_ms" not in out:
        raise InputError("trtexec output has no performance summary", expected="lines like 'Latency: min = ... ms'", actual=text.strip().splitlines()[-1:] or "empty output")
    return out


def run_trtexec(engine: str | Path, manifest: Manifest, *, graph: str | None = None, batch: int = 1, segment_len: int | None = None,
                iterations: int = 200, executable: str = "trtexec", timeout_s: float = 600) -> dict[str, Any]:
    """Run trtexec on ``engine`` for one graph of the package; returns its parsed summary and the command."""
    exe = shutil.which(executable)
    if exe is None:
        raise BackendUnavailableError("trtexec is not on PATH", expected="TensorRT's trtexec (JetPack: /usr/src/tensorrt/bin/trtexec)", actual="not found")
    if not Path(engine).is_file():
        raise InputError("engine file not found", expected="a serialized TensorRT engine (.plan)", actual=str(engine))
    if graph is None and len(manifest.graphs) > 1:
        raise InputError("the package has several graphs; say which the engine is", expected=[g.name for g in manifest.graphs], actual="none")
    g = manifest.graph_named(graph) if graph else manifest.graphs[0]
    cmd = trtexec_command(engine, g, batch=batch, segment_len=segment_len or manifest.segment["max"], iterations=iterations, executable=exe)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if run.returncode != 0:
        raise BackendUnavailableError(f"trtexec failed (exit {run.returncode})", expected="exit 0", actual=(run.stdout + run.stderr).strip()[-1500:])
    return {"graph": g.name, "command": cmd, **parse_trtexec(run.stdout)}
