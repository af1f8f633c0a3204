"""`memx quickstart`: the whole path on the default model in about a minute on a 2-core CPU.

build -> export -> validate over long streams -> solve the model's task through ONNX Runtime
and PyTorch (zoo models) -> stream a demo input (one stream, a snapshot/restore round trip,
and a pool of streams in batched calls) -> quantize to int8 and solve the task again (zoo models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memx import runtimes
from memx.exporter import export_preset
from memx.validation.parity import ParityReport, validate
from memx.validation.recording import record
from memx.formatting import format_shape, human_bytes
from memx.progress import progress_range
from memx.zoo import DEFAULT_MODEL


@dataclass
class QuickstartResult:
    package: Path
    parity: ParityReport
    task: dict | None  # zoo models: accuracy through ONNX Runtime and PyTorch, agreement
    latency_ms_p50: float
    latency_ms_p90: float
    tokens_per_s: float
    pool_tokens_per_s: float
    snapshot_roundtrip_exact: bool
    int8: dict | None = None  # zoo models: the int8-qdq package's accuracy and memory-path check


def _demo_stream(rt: runtimes.Runtime, tokens: np.ndarray, seg: int) -> tuple[list[float], dict[str, np.ndarray], bytes, int]:
    """Stream one long token sequence segment by segment; snapshot half way."""
    s = rt.stream()
    times, snap, snap_at = [], b"", len(tokens) // seg // 2
    for i in progress_range(len(tokens) // seg, "stream demo input", enabled=True):
        chunk = tokens[i * seg : (i + 1) * seg]
        t0 = time.perf_counter()
        s.step(chunk)
        times.append(time.perf_counter() - t0)
        if i + 1 == snap_at:
            snap = s.snapshot()
    return times, s.state, snap, snap_at


def _resume(rt: runtimes.Runtime, snap: bytes, tokens: np.ndarray, seg: int, start: int) -> dict[str, np.ndarray]:
    s = rt.stream()
    s.restore(snap)
    for i in range(start, len(tokens) // seg):
        s.step(tokens[i * seg : (i + 1) * seg])
    return s.state


def _pool_throughput(rt: runtimes.Runtime, streams: int, seg: int, steps: int, rng: np.random.Generator) -> float:
    pool = rt.pool(max_batch=streams)
    ids = [pool.open() for _ in range(streams)]
    t0, n_tokens = time.perf_counter(), 0
    for _ in progress_range(steps, f"pool of {streams} streams", enabled=True):
        feeds = {sid: rng.integers(0, rt.manifest.vocab_size, size=int(rng.integers(seg // 2, seg + 1))) for sid in ids}
        n_tokens += sum(len(v) for v in feeds.values())
        pool.step(feeds)
    return n_tokens / (time.perf_counter() - t0)


def _task_accuracy(rt: runtimes.Runtime, entry, items: int) -> dict:
    """The zoo model's task solved through ONNX Runtime and PyTorch on the same held-out episodes."""
    from memx.validation.accuracy import runtime_task_accuracy

    ort = runtime_task_accuracy(rt, entry.task, items=items, segment_len=entry.segment_len)
    ref = runtime_task_accuracy(runtimes.open(rt.package, backend="torch"), entry.task, items=items, segment_len=entry.segment_len)
    same = float((ort.predictions == ref.predictions).all(axis=1).mean())
    return {"task": entry.task, "items": items, "metric": entry.metric, "onnxruntime": entry.score(ort), "torch": entry.score(ref),
            "same_predictions": same, "chance": entry.chance}


def _quantized(pkg, out_dir: Path, entry, items: int) -> dict:
    """int8-qdq package of the zoo model: its task accuracy and whether the memory path is intact."""
    from memx.calibration import quantize_package
    from memx.calibration.inspect import precision_facts
    from memx.validation.accuracy import runtime_task_accuracy

    q = quantize_package(pkg, out_dir, method="int8-qdq", force=True).package
    score = runtime_task_accuracy(runtimes.open(q, backend="onnxruntime"), entry.task, items=items, segment_len=entry.segment_len)
    facts = precision_facts(q)
    graphs = facts["graphs"].values()
    return {"path": str(q.path), "accuracy": entry.score(score), "bytes": q.size_bytes(), "intact": facts["memory_path_intact"],
            "int8_matmuls": sum(g["low_precision_matmuls"] for g in graphs), "matmuls": sum(g["matmuls"] for g in graphs)}


def run_quickstart(out_dir: Path, *, preset: str = DEFAULT_MODEL, segments: int = 256, demo_segments: int = 64, console: Console | None = None) -> QuickstartResult:
    from memx.zoo import get_zoo, is_zoo

    con = console or Console()
    zoo_entry = get_zoo(preset) if is_zoo(preset) else None  # trained: its task is solved too
    total = 6 if zoo_entry else 4
    label = iter(f"[bold]{i}/{total}[/]" for i in range(1, total + 1))
    t0 = time.perf_counter()
    con.print(f"{next(label)} export [cyan]{preset}[/] -> {out_dir}")
    pkg = export_preset(preset, out_dir, force=True, verify_segments=0, progress=lambda m: con.print(f"    [dim]{m}…[/]"))
    t_export = time.perf_counter() - t0
    m = pkg.manifest

    con.print(f"{next(label)} validate ONNX Runtime against PyTorch over {segments} segments (outputs and states)")
    parity = validate(pkg, segments=segments, batch=4)
    record(pkg, parity)

    rt = runtimes.open(pkg, backend="onnxruntime")
    task = None
    if zoo_entry:
        con.print(f"{next(label)} solve [cyan]{zoo_entry.task}[/] on 1000 held-out episodes through ONNX Runtime and PyTorch")
        task = _task_accuracy(rt, zoo_entry, 1000)
    con.print(f"{next(label)} stream {demo_segments} segments through ONNX Runtime, snapshot half way, resume from the snapshot")
    seg = m.segment["max"]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, m.vocab_size, size=demo_segments * seg)
    times, final_state, snap, snap_at = _demo_stream(rt, tokens, seg)
    resumed = _resume(rt, snap, tokens, seg, snap_at)
    exact = all(np.array_equal(final_state[k], resumed[k]) for k in final_state)

    con.print(f"{next(label)} step a pool of 8 streams with ragged segments in batched calls")
    pool_tps = _pool_throughput(rt, 8, seg, 16, rng)

    int8 = None
    if zoo_entry:
        int8_dir = out_dir.with_name(out_dir.name.replace(".memx", "") + "-int8.memx")
        con.print(f"{next(label)} quantize to int8 (Q/DQ, calibrated on rollouts, memory path kept fp32) -> {int8_dir}; solve the task again")
        int8 = _quantized(pkg, int8_dir, zoo_entry, 1000)

    ms = np.array(times) * 1e3
    result = QuickstartResult(pkg.path, parity, task, float(np.median(ms)), float(np.percentile(ms, 90)), seg / (np.median(ms) / 1e3), pool_tps, exact, int8)
    _report(con, result, pkg, t_export, len(snap), time.perf_counter() - t0, rt.describe().get("custom_ops", "none used"))
    return result


def _report(con: Console, r: QuickstartResult, pkg, t_export: float, snap_bytes: int, total: float, custom_ops: str) -> None:
    m = pkg.manifest
    table = Table(title="memx quickstart", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    state = ", ".join(f"{s.name}{escape(format_shape(s.shape))} {s.dtype}" for s in m.state)
    table.add_row("package", f"{r.package} ({human_bytes(pkg.size_bytes())}, exported in {t_export:.1f}s)")
    table.add_row("model", f"{m.family} / {m.preset}, {m.provenance['parameters']:,} parameters, segment ≤ {m.segment['max']} tokens")
    table.add_row("memory state", state)
    if m.custom_ops:
        ops = ", ".join(f"{c['domain']}.{c['op']}×{c['nodes']}" for c in m.custom_ops)
        table.add_row("custom ops", f"{ops}; ONNX Runtime runs them with the {custom_ops}")
    style = "green" if r.parity.passed else "bold red"
    table.add_row("parity", f"[{style}]{r.parity.summary()}[/]")
    if r.task:
        t = r.task
        unit = "episodes solved" if t["metric"] == "items" else "answer tokens right"
        table.add_row("task", f"{t['task']} over {t['items']} held-out episodes: {t['onnxruntime']:.1%} {unit} through ONNX Runtime, "
                              f"{t['torch']:.1%} through PyTorch (chance {t['chance']:.0%}); identical predictions on {t['same_predictions']:.1%} of episodes")
    if r.int8 and r.task:
        q = r.int8
        table.add_row("int8", f"{q['path']}: {q['int8_matmuls']} of {q['matmuls']} MatMuls int8, memory path "
                              f"{'[green]intact (fp32)[/]' if q['intact'] else '[red]touched[/]'}; {r.task['task']}: {q['accuracy']:.1%} "
                              f"vs {r.task['onnxruntime']:.1%} fp32 ({human_bytes(q['bytes'])})")
    table.add_row("latency (B=1)", f"p50 {r.latency_ms_p50:.2f} ms, p90 {r.latency_ms_p90:.2f} ms per {m.segment['max']}-token segment, ONNX Runtime CPU")
    table.add_row("throughput", f"{r.tokens_per_s:,.0f} tokens/s one stream; {r.pool_tokens_per_s:,.0f} tokens/s pool of 8")
    table.add_row("snapshot", f"{snap_bytes:,} bytes; resume from snapshot {'reproduces the state exactly' if r.snapshot_roundtrip_exact else '[red]DIFFERS[/]'}")
    table.add_row("total time", f"{total:.1f}s")
    con.print(table)
    nxt = f"next: [cyan]memx inspect {r.package}[/]   [cyan]memx validate {r.package} --segments 1024[/]   [cyan]memx zoo[/]"
    if r.int8:
        nxt += f"   [cyan]memx validate {r.int8['path']} --segments 1000[/]"
    con.print(nxt)
