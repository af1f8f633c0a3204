"""`memx profile`: stream latency of backends and precisions, scaling with history, the floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from memx.cli.app import Outcome, command, out
from memx.cli.render import print_profile


@command(examples=["memx profile gmat.memx",
                   "memx profile g.memx --compare onnxruntime,onnxruntime:int8-dynamic,torch --batch 8 --report p.json --csv p.csv --html p.html",
                   "memx profile rmt.memx --history 1k,4k,16k --html scaling.html",
                   "memx profile rmt.memx --floor --json",
                   "memx profile rmt.memx --compare onnxruntime,onnxruntime+fused --floor",
                   "memx profile rmt-built.memx --compare onnxruntime+exported,onnxruntime    (a package with memx build --backend onnxruntime)"])
def profile(
    package: Path = typer.Argument(..., help="Package directory."),
    backend: str = typer.Option("onnxruntime", help="What to time: backend[:precision][@device][+mode], e.g. onnxruntime, onnxruntime:int8-dynamic, torch@cuda, "
                                "torch@cuda+graphs. Modes: host (state through the host each step), resident (state on the device; default off the CPU), "
                                "graphs (resident + CUDA graphs), fused (onnxruntime with memx's graph passes in memory: attention, GELU and int8 MatMul in ONNX Runtime's fused CPU kernels), "
                                "exported (onnxruntime on the graphs as exported, not the CPU build `memx build --backend onnxruntime` wrote; a built package runs its build "
                                "on the CPU by default, +fused included)."),
    compare: Optional[str] = typer.Option(None, help="Several contenders, comma-separated, timed in interleaved rounds; ratios against the first (overrides --backend)."),
    batch: int = typer.Option(1, help="Streams stepped together (the batch of each call)."),
    segment_len: Optional[int] = typer.Option(None, help="Tokens per segment (default: the package's maximum)."),
    segments: int = typer.Option(200, help="Timed segments per contender."),
    warmup: int = typer.Option(10, help="Untimed segments first."),
    seed: int = typer.Option(0, help="Seed of the token stream."),
    report_file: Optional[Path] = typer.Option(None, "--report", help="Write the report (per contender p50/p90/p99/max ms, throughput, samples) as JSON to this file (--json prints it on stdout)."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write one CSV row per contender."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report with plots."),
    tegrastats: bool = typer.Option(True, help="On Jetson, sample tegrastats during the run and add power, load and temperatures to the report."),
    history: Optional[str] = typer.Option(None, help="Scaling: history lengths, e.g. 1k,4k,16k,64k. The memory model consumes each history; a plain "
                                          "Transformer of the same size keeping that history in a KV cache is timed beside it."),
    baseline: bool = typer.Option(True, help="With --history: also time the full-history Transformer."),
    trtexec: Optional[str] = typer.Option(None, help="ENGINE.plan[:GRAPH]: also run TensorRT's trtexec on a built engine with this run's shapes and add its figures."),
    floor: bool = typer.Option(False, "--floor", help="Count FLOPs and bytes per step from the ONNX graph, measure this machine's GEMM peak and copy "
                                "bandwidth, and report the fraction each contender achieves."),
) -> None:
    """Time a package over a stream, per segment: latency percentiles, throughput, memory,
    state bytes per step; compare backends and precisions side by side; with --history,
    per-segment cost versus history length against a full-history Transformer."""
    if history is not None:
        return _profile_scaling(package, history, batch, segment_len, segments, warmup, seed, baseline, report_file, html_out)
    from memx.profiling import profile as run_profile
    from memx.profiling.report import write_csv, write_html, write_json
    from memx.profiling.tegrastats import TegrastatsSampler, jetson_clocks

    sampler = TegrastatsSampler() if tegrastats else None
    if sampler is not None and sampler.available:
        with sampler:
            report = run_profile(package, compare or backend, batch=batch, segment_len=segment_len, segments=segments, warmup=warmup, seed=seed)
        report.extra = {"tegrastats": sampler.summary(), **jetson_clocks()}
    else:
        report = run_profile(package, compare or backend, batch=batch, segment_len=segment_len, segments=segments, warmup=warmup, seed=seed)
    if floor:
        report.extra["floor"] = _floor(report)
    if trtexec:
        from memx.exporter import Package
        from memx.profiling.trtexec import run_trtexec

        engine, _, graph = trtexec.partition(":")
        report.extra["trtexec"] = run_trtexec(engine, Package.open(package).manifest, graph=graph or None, batch=batch, segment_len=report.segment_len)
    print_profile(report)
    written = []
    for path, writer in ((report_file, write_json), (csv_out, write_csv), (html_out, write_html)):
        if path is not None:
            writer(report, path)
            written.append(str(path))
    fastest = min(report.contenders, key=lambda c: c.latency.p50_ms)
    summary = f"profiled {len(report.contenders)} contender(s) over {segments} segments; fastest {fastest.name} p50 {fastest.latency.p50_ms:.3f} ms"
    return Outcome(summary + (f"; wrote {', '.join(written)}" if written else ""), report.to_dict())


def _profile_scaling(package: Path, history: str, batch: int, segment_len: Optional[int], segments: int, warmup: int, seed: int,
                     baseline: bool, json_out: Optional[Path], html_out: Optional[Path]) -> Outcome:
    from memx.formatting import human_bytes
    from memx.package.files import write_text_atomic
    from memx.profiling.report import render_scaling_html
    from memx.profiling.scaling import scaling, scaling_budget

    segments, warmup = scaling_budget(segments, warmup)
    report = scaling(package, history, batch=batch, segment_len=segment_len, segments=segments, warmup=warmup, seed=seed, with_baseline=baseline)
    table = Table(title=f"{report.family}: per-segment latency vs history (B={report.batch}, S={report.segment_len}, {report.segments} timed segments per point)")
    for col in ("history", "mem p50 ms", "growth", "full p50 ms", "full/mem", "KV/stream"):
        table.add_column(col, justify="right", no_wrap=True)
    for p, g in zip(report.points, report.memory_growth()):
        table.add_row(f"{p.history:,}", f"{p.memory.p50_ms:.2f}", f"{g:.2f}x", f"{p.baseline.p50_ms:.2f}" if p.baseline else "—",
                      f"{p.baseline.p50_ms / p.memory.p50_ms:.1f}x" if p.baseline else "—", human_bytes(p.baseline_state_bytes) if p.baseline_state_bytes else "—")
    out.print(table)
    out.print("mem: the memory model after consuming the history; growth: its p50 over the first point's; full: a plain Transformer of the "
              "same size keeping the whole history in a KV cache (KV/stream: its cache per stream)", highlight=False)
    out.print(f"memory model state per stream: {human_bytes(report.points[0].memory_state_bytes)} at every history length", highlight=False)
    written = []
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=1) + "\n")
        written.append(str(json_out))
    if html_out is not None:
        write_text_atomic(html_out, render_scaling_html(report))
        written.append(str(html_out))
    summary = f"scaling of {report.family} over {len(report.points)} history lengths" + (f"; wrote {', '.join(written)}" if written else "")
    return Outcome(summary, report.to_dict())


def _floor(report: Any) -> dict[str, Any]:
    from memx.exporter import Package
    from memx.profiling.floor import floor_report, measure_peak, package_cost

    cost = package_cost(Package.open(report.package), batch=report.batch, segment_len=report.segment_len)
    peak = measure_peak()
    return {c.name: floor_report(cost, peak, c.latency.p50_ms) for c in report.contenders}
