"""The `memx` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a check failed (e.g. parity beyond tolerance), 2 bad
input or a memx error (the message says what was expected and what was found).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memx.errors import MemxError, expect_choice
from memx.formatting import format_shape
from memx.zoo import DEFAULT_MODEL

app = typer.Typer(
    name="memx",
    help="Export memory-augmented Transformers with their memory as explicit state, run them with "
    "runtimes that carry the memory across calls, and check long-horizon parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _shape(shape: list) -> str:
    """A shape for rich output: "[batch, 16]" would otherwise be read as a markup tag."""
    return escape(format_shape(shape))


def _errors_to_exit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print memx errors as one clear line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemxError as e:
            err.print(f"[bold red]error[/] ({type(e).__name__}): {escape(str(e))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_errors_to_exit
def export(
    target: str = typer.Argument(..., help="A trained zoo model or a preset name (see `memx zoo`)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Package directory to write (NAME.memx)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to load (.safetensors, names/shapes checked strictly)."),
    segment_len: Optional[int] = typer.Option(None, help="Longest segment the package accepts (default: the model's maximum)."),
    opset: int = typer.Option(18, help="ONNX opset (>= 17)."),
    seed: int = typer.Option(0, help="Seed for the initial weights when no checkpoint is given."),
    verify_segments: int = typer.Option(32, help="Segments of parity check before the package is written (0: skip)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package (atomically)."),
    inline_custom_ops: bool = typer.Option(False, "--inline-custom-ops", help="Export sparse attention as plain ONNX ops instead of memx custom ops (each with a reference body)."),
) -> None:
    """Export one segment step of a model to a memx package (ONNX + manifest).

    GMAT's sparse attention becomes one memx.LocalGlobalAttention node per layer with a
    model-local reference body: ONNX Runtime runs the C++ kernel when libmemx_ops is built
    (`make ops`), the body otherwise; TensorRT parses the body unless a plugin claims the node."""
    from memx.exporter import export_preset

    t0 = time.perf_counter()
    pkg = export_preset(
        target, out_dir, seed=seed, checkpoint=checkpoint, segment_len=segment_len, opset=opset, force=force,
        verify_segments=verify_segments, inline_custom_ops=inline_custom_ops, progress=lambda msg: err.print(f"[dim]{msg}…[/]"),
    )
    m = pkg.manifest
    states = ", ".join(f"{s.name}{_shape(s.shape)}" for s in m.state) or "none (stateless step)"
    out.print(f"wrote [bold]{pkg.path}[/] ({m.family}, {m.precision}, state: {states}) in {time.perf_counter() - t0:.1f}s")


@app.command()
@_errors_to_exit
def validate(
    package: Path = typer.Argument(..., help="Package directory."),
    segments: Optional[int] = typer.Option(None, help="Segments to run (default 256 for parity, 1024 for quantized packages; long streams catch drift one step cannot)."),
    backend: str = typer.Option("onnxruntime", help="Backend to check against the PyTorch reference."),
    device: str = typer.Option("cpu", help="Device for the backend (cpu, cuda, tensorrt)."),
    batch: int = typer.Option(4, help="Streams run side by side."),
    atol: float = typer.Option(1e-4, help="Absolute tolerance for outputs and states (fp32 parity)."),
    seed: int = typer.Option(0, help="Seed of the random streams."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    record: bool = typer.Option(True, help="Record the result in the package manifest."),
    kernels: str = typer.Option("auto", help="memx custom ops on onnxruntime: auto (libmemx_ops if built), on (require it), off (reference bodies)."),
    against: Optional[str] = typer.Option(None, help="Precision check: compare with 'torch' (the fp32 reference weights) or an fp32 package DIR; "
                                          "per-segment drift, top-1 agreement/KL, task accuracy; plot and JSON saved in DIR/reports. Default for quantized packages: torch."),
    max_accuracy_drop: float = typer.Option(1.0, help="Precision check: the largest task accuracy drop (percentage points) that passes."),
    drift_tol: float = typer.Option(0.05, help="Precision check: state relative error that counts as divergence."),
) -> None:
    """Check a package over long streams: fp32 parity with PyTorch (outputs and states within
    --atol), or, for quantized packages (or with --against), drift and task accuracy."""
    from memx.exporter import Package, validate as run_validation
    from memx.package.files import update_manifest

    pkg = Package.open(package)
    choices = {"auto": None, "on": True, "off": False}
    if kernels not in choices:
        raise expect_choice("--kernels value", kernels, list(choices))
    options = {"custom_op_library": choices[kernels]} if backend == "onnxruntime" else {}
    if against is None and pkg.manifest.precision != "fp32":
        against = "torch"
    if against is not None:
        _validate_precision(pkg, against, segments or 1024, batch, seed, drift_tol, max_accuracy_drop, json_out, record, options)
        return
    report = run_validation(pkg, backend=backend, device=device, segments=segments or 256, batch=batch, atol=atol, seed=seed, backend_options=options)
    _print_parity(report)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if record:
        m = pkg.manifest
        m.validation = {**(m.validation or {}), f"{backend}:{device}": report.to_dict()}
        update_manifest(pkg, m)
    if not report.passed:
        raise typer.Exit(1)


def _validate_precision(pkg: Any, against: str, segments: int, batch: int, seed: int, drift_tol: float, max_drop: float,
                        json_out: Optional[Path], record: bool, options: dict[str, Any]) -> None:
    from memx.calibration.evaluate import compare_precision, report_name, save_report
    from memx.package.files import update_manifest

    report = compare_precision(pkg, against=against, segments=segments, batch=batch, seed=seed, drift_tol=drift_tol,
                               max_accuracy_drop=max_drop, backend_options=options)
    saved = save_report(pkg, report, report_name(against))
    _print_drift(report)
    out.print("report: " + ", ".join(str(pkg.path / p) for p in saved.values()), highlight=False)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    if record:
        m = pkg.manifest
        m.validation = {**(m.validation or {}), f"precision:{report_name(against)}": {**report.record(), "reports": saved}}
        update_manifest(pkg, m)
    if not report.passed:
        raise typer.Exit(1)


def _print_drift(report: Any) -> None:
    n = report.summary_numbers()
    table = Table(title=f"{report.precision} vs {report.reference}: {report.segments} segments x {report.batch} streams, never reset ({escape(report.stream_source)})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    if report.top1_agreement:
        table.add_row("logits top-1 agreement (all / last 10%)", f"{n['top1_agreement_mean']:.2%} / {n['top1_agreement_last10pct']:.2%}")
        table.add_row("logits KL(ref || quantized), mean", f"{n['kl_mean']:.3g}")
    table.add_row("largest output error", f"{n['output_max_error']:.3g}")
    for name, e in n["state_rel_error_max"].items():
        table.add_row(f"state {name}: relative error max / final", f"{e:.3g} / {n['state_rel_error_final'][name]:.3g}")
    f = report.first_divergence
    table.add_row(f"first divergence (state error > {report.drift_tol:g})", f"segment {f['segment']} ({f['state']})" if f else "none")
    acc = report.task_accuracy
    if acc is not None:
        table.add_row(f"task {acc.task} ({acc.metric}, {acc.items} episodes, {acc.segments} segments)",
                      f"{acc.candidate:.2%} vs {acc.reference:.2%} ({-acc.drop_points:+.2f} points)")
        table.add_row("same answers as the reference", f"{acc.agreement:.2%}")
    out.print(table)
    if acc is None:
        out.print("no task accuracy: the package names no task (zoo models do); the drift above is the measure", highlight=False)
    style = "green" if report.passed else "bold red"
    verdict = "PASS" if report.passed else "FAIL"
    gate = f"accuracy drop {acc.drop_points:.2f} points (allowed {report.max_accuracy_drop:g})" if acc is not None else "report only"
    out.print(f"[{style}]{verdict}[/]: {gate}", highlight=False)


def _print_quantization(q: dict[str, Any]) -> None:
    table = Table(title=f"quantization: {q['method']} — {escape(q['policy']['description'])}")
    for col in ("graph", "MatMuls in low precision", "Q / DQ / Cast", "memory read / write projections", "values of the state rounded by"):
        table.add_column(col)
    for name, g in q["graphs"].items():
        mp = g["memory_path"]
        low = mp["low_precision_projections"]
        table.add_row(name, f"{g['low_precision_matmuls']} of {g['matmuls']}", f"{g['quantize_linear']} / {g['dequantize_linear']} / {g['casts']}",
                      f"{len(mp['read'])} / {len(mp['write'])}" + (f" ({len(low)} in low precision)" if low else " (float)"),
                      ", ".join(mp["rounding_nodes"]) or "nothing")
    out.print(table)
    verdict = "[green]memory path intact[/] (no Q/DQ or 16-bit cast on the state, projections in float)" if q["memory_path_intact"] else \
        "[yellow]memory path quantized or rounded[/] (as the policy asks)"
    out.print(verdict)
    c = q.get("calibration")
    if c:
        out.print(f"calibration: {escape(c['source'])}, {c['segments']} segment steps x {c['streams']} streams, depths {c['depths']['min']}..{c['depths']['max']} "
                  f"({c['mode']}, {c['method']})", highlight=False)
    for w in q.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(w)}")


def _print_parity(report: Any) -> None:
    table = Table(title=f"parity: {report.backend} vs {report.reference}", show_lines=False)
    table.add_column("tensor")
    table.add_column("max abs error", justify="right")
    table.add_column("ok", justify="center")
    for name, e in report.per_tensor_max.items():
        table.add_row(name, f"{e:.3g}", "✓" if e <= report.atol else "✗")
    out.print(table)
    style = "green" if report.passed else "bold red"
    out.print(f"[{style}]{report.summary()}[/]", highlight=False)
    out.print(f"streams: {report.batch}, resets mid-stream: {report.resets}, padded rows: {report.padded_rows}, seed {report.seed}")
    if report.runtime.get("custom_ops", "none used") != "none used":
        out.print(f"memx custom ops ran as: {report.runtime['custom_ops']}", highlight=False)


@app.command()
@_errors_to_exit
def quantize(
    package: Path = typer.Argument(..., help="An fp32 package directory (memx export)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Quantized package to write (a new directory)."),
    method: str = typer.Option("int8-qdq", help="int8-qdq (static, Q/DQ on MatMul/Gemm, for TensorRT and ORT), int8-dynamic (CPU, no calibration), fp16."),
    calib: Optional[Path] = typer.Option(None, help="Calibration tokens: .npy (1-D text or 2-D streams) or .npz (array 'tokens')."),
    task: Optional[str] = typer.Option(None, help="Calibrate on a synthetic task's episodes (see memx train). Default: the package's task, else random tokens (warned)."),
    calib_segments: int = typer.Option(128, help="Segment steps recorded for calibration (stratified over the rollout: early, middle, late)."),
    calib_horizon: Optional[int] = typer.Option(None, help="Length of the calibration rollout in segments (default max(2 x --calib-segments, 64))."),
    calib_streams: int = typer.Option(8, help="Streams rolled side by side."),
    calib_method: str = typer.Option("minmax", help="Activation range method: minmax, entropy, percentile."),
    calib_depths: str = typer.Option("rollout", help="rollout (states at many depths) or first (zero-state first segments only, what snapshot calibration sees; for comparison)."),
    state_precision: str = typer.Option("fp32", help="Memory path: fp32 (excluded from quantization, default), fp16 or int8 (rounded every step; experiments)."),
    attention_qdq: bool = typer.Option(False, "--attention-qdq", help="int8-qdq: also quantize attention's activation-by-activation MatMuls (off: they stay float, as TensorRT's MHA fusion prefers)."),
    seed: int = typer.Option(0, help="Seed of the calibration streams."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output package (atomically)."),
) -> None:
    """Quantize a package: calibrate on rollouts of the fp32 model over real streams (states at
    many depths), keep the memory path in fp32 unless told otherwise, write a new package."""
    from memx.calibration import quantize_package
    from memx.calibration.feeds import TaskSource, load_token_file
    from memx.exporter import Package
    from memx.formatting import human_bytes

    src = Package.open(package)
    m = src.manifest
    if calib is not None and task is not None:
        raise MemxError("give --calib or --task, not both", expected="one calibration source", actual="--calib and --task")
    source = None
    if calib is not None:
        source = load_token_file(calib, m.vocab_size)
    elif task is not None:
        source = TaskSource(task, m.segment["max"], causal=m.causal, vocab_size=m.vocab_size)
    t0 = time.perf_counter()
    result = quantize_package(src, out_dir, method=method, source=source, calib_segments=calib_segments, calib_horizon=calib_horizon,
                              calib_streams=calib_streams, calib_mode=calib_depths, calibration=calib_method, state_precision=state_precision,
                              attention_qdq=attention_qdq, seed=seed, force=force)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    q = result.package.manifest.quantization or {}
    table = Table(title=f"{method}: {result.package.path}")
    for col in ("graph", "memory path kept in float (read / write / other nodes)", "Q / DQ / Cast in the graph", "size"):
        table.add_column(col)
    from memx.calibration.inspect import precision_facts

    facts = precision_facts(result.package)
    for g in result.package.manifest.graphs:
        mp = q["graphs"][g.name]["memory_path"]
        kept = f"{len(mp['read'])} / {len(mp['write'])} / {len(mp['other'])}" if q["policy"]["memory_path"] == "excluded" else "none (quantized by policy)"
        f = facts["graphs"][g.name]
        table.add_row(g.name, kept, f"{f['quantize_linear']} Q, {f['dequantize_linear']} DQ, {f['casts']} Cast",
                      f"{human_bytes(src.manifest.files[g.file].bytes)} -> {human_bytes(result.package.manifest.files[g.file].bytes)}")
    out.print(table)
    c = q.get("calibration")
    if c:
        out.print(f"calibration: {escape(c['source'])}, {c['segments']} segment steps x {c['streams']} streams at depths {c['depths']['min']}..{c['depths']['max']} "
                  f"of a {c['horizon']}-segment rollout ({c['mode']}, {c['method']})", highlight=False)
    out.print(f"state: {q['policy']['description']}", highlight=False)
    out.print(f"wrote [bold]{result.package.path}[/] in {time.perf_counter() - t0:.1f}s; check it: memx validate {result.package.path}")


@app.command()
@_errors_to_exit
def profile(
    package: Path = typer.Argument(..., help="Package directory."),
    backend: str = typer.Option("onnxruntime", help="What to time: backend[:precision][@device][+mode], e.g. onnxruntime, onnxruntime:int8-dynamic, torch@cuda, "
                                "torch@cuda+graphs. Modes: host (state through the host each step), resident (state on the device; default off the CPU), "
                                "graphs (resident + CUDA graphs)."),
    compare: Optional[str] = typer.Option(None, help="Several contenders, comma-separated, timed in interleaved rounds; ratios against the first (overrides --backend)."),
    batch: int = typer.Option(1, help="Streams stepped together (the batch of each call)."),
    segment_len: Optional[int] = typer.Option(None, help="Tokens per segment (default: the package's maximum)."),
    segments: int = typer.Option(200, help="Timed segments per contender."),
    warmup: int = typer.Option(10, help="Untimed segments first."),
    seed: int = typer.Option(0, help="Seed of the token stream."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report (per contender p50/p90/p99/max ms, throughput, samples) as JSON."),
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
        _profile_scaling(package, history, batch, segment_len, segments, warmup, seed, baseline, json_out, html_out)
        return
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
    _print_profile(report)
    for path, writer in ((json_out, write_json), (csv_out, write_csv), (html_out, write_html)):
        if path is not None:
            writer(report, path)
            out.print(f"wrote {path}", highlight=False)


def _profile_scaling(package: Path, history: str, batch: int, segment_len: Optional[int], segments: int, warmup: int, seed: int,
                     baseline: bool, json_out: Optional[Path], html_out: Optional[Path]) -> None:
    from memx.package.files import write_text_atomic
    from memx.formatting import human_bytes
    from memx.profiling.report import render_scaling_html
    from memx.profiling.scaling import scaling

    report = scaling(package, history, batch=batch, segment_len=segment_len, segments=min(segments, 50), warmup=min(warmup, 5), seed=seed, with_baseline=baseline)
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
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=1) + "\n")
        out.print(f"wrote {json_out}", highlight=False)
    if html_out is not None:
        write_text_atomic(html_out, render_scaling_html(report))
        out.print(f"wrote {html_out}", highlight=False)


def _floor(report: Any) -> dict[str, Any]:
    from memx.exporter import Package
    from memx.profiling.floor import floor_report, measure_peak, package_cost

    cost = package_cost(Package.open(report.package), batch=report.batch, segment_len=report.segment_len)
    peak = measure_peak()
    return {c.name: floor_report(cost, peak, c.latency.p50_ms) for c in report.contenders}


def _print_floor(floors: dict[str, Any]) -> None:
    first = next(iter(floors.values()))
    peak = first["peak"]
    out.print(f"floor: {first['flops'] / 1e6:.1f} MFLOP and {first['bytes'] / 2**20:.2f} MiB per step (weights {first['weight_bytes'] / 2**20:.2f} MiB); "
              f"this machine: {peak['gemm_gflops']:.1f} GFLOP/s fp32 GEMM, {peak['copy_gbps']:.1f} GB/s copy; floor {first['floor_ms']:.3f} ms ({first['bound']}-bound)",
              highlight=False)
    for name, f in floors.items():
        out.print(f"  {name}: {f['achieved_gflops']:.2f} GFLOP/s = {f['fraction_of_gemm_peak']:.1%} of the GEMM peak, "
                  f"{f['fraction_of_copy_bandwidth']:.1%} of copy bandwidth; {f['measured_over_floor']:.1f}x the floor", highlight=False)


def _print_profile(report: Any) -> None:
    from memx.formatting import human_bytes

    table = Table(title=f"{report.family}: B={report.batch}, S={report.segment_len}, {report.segments} segments after {report.warmup} warm-up (interleaved)")
    table.add_column("contender (precision)", min_width=14, overflow="fold")
    for col in ("p50 ms", "p90 ms", "p99 ms", "max ms", "tokens/s", "speed-up"):
        table.add_column(col, justify="right", no_wrap=True)
    ratios = report.ratios()
    for c in report.contenders:
        name = c.name if c.name.partition("@")[0].count(":") else f"{c.name} ({c.precision})"
        table.add_row(name, f"{c.latency.p50_ms:.2f}", f"{c.latency.p90_ms:.2f}", f"{c.latency.p99_ms:.2f}", f"{c.latency.max_ms:.2f}",
                      f"{c.throughput.tokens_per_s:,.0f}", f"{ratios[c.name]['p50']:.2f}x")
    out.print(table)
    out.print(f"state moved per step (read + written): {human_bytes(report.baseline.state_bytes_per_step)}", highlight=False)
    for c in report.contenders:
        if c.gpu_latency is not None:
            out.print(f"{c.name}: CUDA events p50 {c.gpu_latency.p50_ms:.3f} ms, p99 {c.gpu_latency.p99_ms:.3f} ms on the device; "
                      f"peak device memory {c.device_memory_mb:.0f} MiB", highlight=False)
    out.print(f"speed-up: p50 of {report.baseline.name} / p50 of the row (higher is faster)", highlight=False)
    mach = report.machine
    out.print(f"machine: {mach.get('cpu')}, {mach.get('cores')} cores{', ' + mach['board'] if 'board' in mach else ''}; peak RSS {report.peak_rss_mb:.0f} MiB", highlight=False)
    if report.extra and "floor" in report.extra:
        _print_floor(report.extra["floor"])
    trt = report.extra.get("trtexec") if report.extra else None
    if trt:
        lat = trt.get("gpu_compute_ms") or trt.get("latency_ms") or {}
        out.print(f"trtexec ({trt['graph']}, one static call, random inputs, no carried state): GPU compute median {lat.get('median', float('nan')):.3f} ms, "
                  f"p99 {lat.get('p99', float('nan')):.3f} ms, {trt.get('throughput_qps', float('nan')):.0f} qps", highlight=False)
    teg = report.extra.get("tegrastats") if report.extra else None
    if teg and teg.get("samples"):
        power = ", ".join(f"{k} {v['mean']:.0f} mW" for k, v in teg["power_mw"].items())
        gpu = teg.get("gpu_load_pct") or {}
        out.print(f"tegrastats: {teg['samples']} samples; GPU load mean {gpu.get('mean', float('nan')):.0f}%; {power}", highlight=False)


@app.command()
@_errors_to_exit
def doctor(
    package: Path = typer.Argument(..., help="Package directory (or a bare .onnx file)."),
    target: str = typer.Option("tensorrt", help="What to check for: tensorrt."),
    trt_version: Optional[str] = typer.Option(None, help="TensorRT version to check against, e.g. 10.3 (JetPack 6) or 11.4. Default: the installed tensorrt, else the latest known."),
    target_cc: Optional[str] = typer.Option(None, help="GPU compute capability (sm87 Jetson Orin, sm89, sm90, ...): enables the FP8 check."),
    json_out: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Static check of a package for TensorRT, no GPU needed: unsupported ops and dtypes,
    dynamic-shape problems, custom ops with/without plugin (by TensorRT version), Q/DQ that
    TensorRT rejects. Every finding comes with its fix. Exit 1 when there are errors."""
    from memx.tensorrt import diagnose

    report = diagnose(package, target=target, trt_version=trt_version, target_cc=target_cc)
    if json_out:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        out.print(f"memx doctor: {escape(str(package))} for TensorRT {report.trt_version} ({escape(report.version_source)}); ops checked with {escape(report.parser)}", highlight=False)
        if not report.findings:
            out.print("[green]no findings[/]: every graph should parse and build")
        style = {"error": "[bold red]error[/]  ", "warning": "[yellow]warning[/]", "info": "[blue]info[/]   "}
        for f in report.findings:
            where = escape(f.graph + (f" / {f.node}" if f.node else ""))
            out.print(f"{style[f.severity]} {where}: {escape(f.message)}", highlight=False)
            if f.fix:
                out.print(f"          fix: {escape(f.fix)}", highlight=False)
        n_err, n_warn = len(report.errors), sum(f.severity == "warning" for f in report.findings)
        out.print(f"{n_err} error(s), {n_warn} warning(s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_errors_to_exit
def build(
    package: Path = typer.Argument(..., help="Package directory; engines are added to it (engines/GRAPH.plan + build tags in memx.json)."),
    backend: str = typer.Option("tensorrt", help="tensorrt."),
    segment_len: Optional[list[str]] = typer.Option(None, help="Segment-length range MIN,OPT,MAX of an optimization profile (repeat for several profiles). Default: the package's min..max, opt = max."),
    batch: Optional[str] = typer.Option(None, help="Batch range MIN,OPT,MAX. Default 1,1,8."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Build a version-compatible engine (runs on later TensorRT runtimes, the lean runtime included)."),
    timing_cache: Optional[Path] = typer.Option(None, help="Timing cache file: read if it exists, written after the build (faster rebuilds)."),
    target_cc: Optional[str] = typer.Option(None, help="Compute capability to build for: sm75/sm80/sm86/sm89/sm120 with TensorRT-RTX (default sm89); full TensorRT builds for the local GPU."),
    plugin: str = typer.Option("auto", help="How memx ops are imported: aot (Triton kernel embedded in the engine, TensorRT >= 10.9), jit (Python plugin, needs "
                               "memx where the engine runs), off (the ops' function bodies), auto (aot, else jit, else off; off with TensorRT-RTX)."),
) -> None:
    """Build TensorRT engines for every graph: with `tensorrt` for the local GPU, otherwise with
    TensorRT-RTX ahead of time for a named compute capability (no GPU needed). Precision
    follows the graph (fp16 types, Q/DQ); custom memx ops use a registered plugin or their
    reference body, and the output says which."""
    if backend != "tensorrt":
        raise expect_choice("backend", backend, ["tensorrt"])
    from memx.formatting import human_bytes
    from memx.tensorrt import build_engines

    tags = build_engines(package, batch=batch, segment_len=segment_len, target_cc=target_cc, version_compatible=version_compatible,
                         timing_cache=timing_cache, plugin=plugin, progress=lambda msg: err.print(escape(msg), highlight=False))
    from memx.exporter import Package

    pkg = Package.open(package)
    table = Table(title=f"TensorRT engines in {package}")
    for col in ("graph", "engine", "built with", "for", "precision", "profiles (batch; segment)", "custom ops", "build"):
        table.add_column(col)
    for t in tags:
        prof = "; ".join(f"{p.batch[0]}..{p.batch[2]}" + (f"; {p.segment[0]}..{p.segment[2]}" if p.segment else "") for p in t.profiles)
        ops = ", ".join(f"{k}: {v}" for k, v in t.custom_ops.items()) or "none"
        table.add_row(t.graph, f"{t.file} ({human_bytes(pkg.manifest.files[t.file].bytes)})", f"{t.flavour} {t.trt_version}", t.compute_capability,
                      t.precision + (" (strongly typed)" if t.strongly_typed else ""), escape(prof), escape(ops), f"{t.build_seconds:.1f}s")
    out.print(table)


@app.command()
@_errors_to_exit
def inspect(
    package: Path = typer.Argument(..., help="Package directory."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    verify: bool = typer.Option(False, help="Also check every file's sha256."),
) -> None:
    """Show a package: state tensors, graph inputs/outputs, ops, precision, size, validation."""
    from memx.exporter import Package
    from memx.formatting import human_bytes
    from memx.inspection import describe_package

    info = describe_package(Package.open(package, verify=verify))
    if json_out:
        out.print_json(json.dumps(info))
        return
    out.print(f"[bold]{info['path']}[/]  family={info['family']} preset={info['preset']} precision={info['precision']} "
              f"format v{info['format_version']} size={human_bytes(info['size_bytes'])}", highlight=False)
    out.print(f"vocab {info['vocab_size']}, segment length {info['segment']['min']}..{info['segment']['max']}, "
              f"state per stream {human_bytes(info['state_bytes_per_stream'])}, model id {info['model_id'][:16]}", highlight=False)
    st = Table(title="state (carried between segments)")
    for col in ("name", "shape", "dtype", "precision", "graph input → output"):
        st.add_column(col)
    for s in info["state"]:
        st.add_row(s["name"], _shape(s["shape"]), s["dtype"], s["precision"], f"{s['input']} → {s['output']}")
    if not info["state"]:
        st.add_row("(none)", "", "", "", "stateless step")
    out.print(st)
    if len(info["graphs"]) > 1:
        out.print("graphs run in this order each step: " + " → ".join(g["name"] for g in info["graphs"]), highlight=False)
    for g in info["graphs"]:
        io = Table(title=f"graph {g['name']} ({g['file']}, {g['nodes']} nodes, opset {g['opset']})")
        for col in ("direction", "name", "dtype", "shape"):
            io.add_column(col)
        for t in g["inputs"]:
            source = g["consumes"].get(t["name"])
            io.add_row("in", t["name"] + (f" (from {source})" if source else ""), t["dtype"], _shape(t["shape"]))
        for t in g["outputs"]:
            io.add_row("out", t["name"], t["dtype"], _shape(t["shape"]))
        out.print(io)
        out.print("ops: " + ", ".join(f"{k}×{v}" for k, v in g["ops"].items()), highlight=False)
        out.print("custom ops: " + (", ".join(f"{c['domain']}.{c['op']}×{c['count']}" for c in g["custom_ops"]) or "none"), highlight=False)
    for op in info["custom_op_kernels"]:
        kt = Table(title=f"custom op {op['domain']}.{op['op']} v{op['version']}: what runs it")
        kt.add_column("backend", no_wrap=True)
        kt.add_column("runs")
        for backend_name, how in op["backends"].items():
            kt.add_row(backend_name, escape(how))
        out.print(kt)
    if info["quantization"]:
        _print_quantization(info["quantization"])
    if info["validation"]:
        for key, v in info["validation"].items():
            if key.startswith("precision:"):
                acc = v.get("task_accuracy")
                what = f"task {acc['candidate']:.2%} vs {acc['reference']:.2%} ({-acc['drop_points']:+.2f} points)" if acc else \
                    f"top-1 agreement {v['summary']['top1_agreement_mean']:.2%}"
                out.print(f"validation {key}: {'PASS' if v['passed'] else 'FAIL'}, {what} over {v['segments']} segments", highlight=False)
            else:
                out.print(f"validation {key}: {'PASS' if v['passed'] else 'FAIL'}, max error {v['max_error']:.3g} over {v['segments']} segments")
    else:
        out.print("validation: not run (memx validate records it)")


@app.command()
@_errors_to_exit
def zoo(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List model families and presets."""
    from memx.models import build_preset, families, presets

    rows = []
    for p in presets():
        model = build_preset(p.name)
        rows.append({"preset": p.name, "family": p.family, "size": p.size, "parameters": model.num_parameters(),
                     "state": {s.name: list(s.shape) for s in model.state_specs()}, "max_segment_len": model.max_segment_len,
                     "description": p.description})
    from memx.zoo import zoo_entries

    trained = [{"name": e.name, "family": e.family, "task": e.task, "segment_len": e.segment_len, "metric": e.metric, "chance": e.chance,
                "accuracy": e.trained_accuracy(), "checkpoint": str(e.checkpoint), "available": e.checkpoint.is_file(), "description": e.description}
               for e in zoo_entries()]
    if json_out:
        out.print_json(json.dumps({"families": sorted(families()), "presets": rows, "zoo": trained}))
        return
    table = Table(title=f"memx zoo: families {', '.join(sorted(families()))}")
    for col in ("preset", "family", "params"):
        table.add_column(col, no_wrap=True)
    table.add_column("state per stream")
    table.add_column("S max", no_wrap=True)
    table.add_column("description")
    for r in rows:
        state = _state_summary(r["state"])
        params = f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] >= 1e6 else f"{r['parameters'] / 1e3:.1f}k"
        table.add_row(r["preset"], r["family"], params, state, str(r["max_segment_len"]), r["description"])
    out.print(table)
    z = Table(title="trained zoo models (memx export NAME --out DIR; accuracy on held-out episodes, docs/zoo.md)")
    for col in ("name", "family", "task", "segment", "metric", "accuracy", "chance"):
        z.add_column(col, no_wrap=True)
    for e in trained:
        acc = f"{e['accuracy']:.1%}" if e["accuracy"] is not None else "—"
        z.add_row(e["name"], e["family"], e["task"], str(e["segment_len"]), e["metric"], acc if e["available"] else "[red]checkpoint missing[/]", f"{e['chance']:.1%}")
    out.print(z)
    for e in trained:
        out.print(f"[bold]{e['name']}[/]: {escape(e['description'])}")


def _state_summary(state: dict[str, list[int]]) -> str:
    """memory[4, 32] for one or two tensors; "6 tensors, 12.1 KiB" (fp32) for more."""
    if len(state) <= 2:
        return ", ".join(f"{k}{_shape(v)}" for k, v in state.items()) or "—"
    from memx.formatting import human_bytes

    floats = sum(math.prod(v) for v in state.values())
    return f"{len(state)} tensors, {human_bytes(4 * floats)}"


@app.command("train")
@_errors_to_exit
def train_command(
    task: str = typer.Argument(..., help="Synthetic task: copy, reverse, associative-retrieval, majority, frequency-sort."),
    checkpoint: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (CKPT.safetensors; .optim.pt and .train.json beside it)."),
    family: str = typer.Option("rmt", help="Model family; trains FAMILY-tiny unless --preset is given."),
    preset: Optional[str] = typer.Option(None, help="Preset to train (see `memx zoo`); overrides --family."),
    steps: int = typer.Option(2000, help="Optimisation steps (one episode batch each)."),
    batch: int = typer.Option(32, help="Episodes per step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    bptt_depth: Optional[int] = typer.Option(None, help="Segments gradients flow back through the memory (default: all)."),
    segment_len: int = typer.Option(8, help="Tokens per segment."),
    seed: int = typer.Option(0, help="Seed of weights and data (training is deterministic)."),
    eval_every: int = typer.Option(250, help="Evaluate and checkpoint every N steps."),
    warmup: int = typer.Option(0, help="Steps of linear learning-rate warmup."),
    schedule: str = typer.Option("constant", help="Learning-rate schedule: constant, or cosine (decays to lr/10)."),
    mrbp: bool = typer.Option(False, "--mrbp", help="Memory replay back-propagation: BPTT's gradients, one segment's activations in memory at a time."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out (same settings)."),
) -> None:
    """Train a model on a synthetic long-input task, segment by segment with memory (BPTT)."""
    from memx.models import build_preset
    from memx.training import TrainConfig, train

    name = preset or f"{family}-tiny"
    model = build_preset(name, seed=seed)
    cfg = TrainConfig(task=task, steps=steps, batch=batch, lr=lr, bptt_depth=bptt_depth, segment_len=segment_len, seed=seed, eval_every=eval_every,
                      warmup=warmup, schedule=schedule, mrbp=mrbp)
    result = train(model, cfg, out=checkpoint, resume=resume)
    table = Table(title=f"train {task} on {name}")
    for col in ("step", "loss", "accuracy (items)", "accuracy (tokens)"):
        table.add_column(col, justify="right")
    for h in result.history:
        table.add_row(str(h["step"]), f"{h['loss']:.4f}", f"{h['accuracy']:.3f}", f"{h['token_accuracy']:.3f}")
    out.print(table)
    out.print(f"checkpoint: {checkpoint}  (export it: memx export {name} --checkpoint {checkpoint} --out {name}.memx)")


@app.command()
@_errors_to_exit
def quickstart(
    out_dir: Path = typer.Option(Path("quickstart/model.memx"), "--out", "-o", help="Where to write the package (replaced if present)."),
    preset: str = typer.Option(DEFAULT_MODEL, help="Zoo model or preset to build (see `memx zoo`)."),
    segments: int = typer.Option(256, help="Segments of parity validation."),
    demo_segments: int = typer.Option(64, help="Segments streamed in the demo."),
) -> None:
    """Build the default model, export it, validate it over long streams, and stream a demo through ONNX Runtime."""
    from memx.quickstart import run_quickstart

    result = run_quickstart(out_dir, preset=preset, segments=segments, demo_segments=demo_segments, console=out)
    if not result.parity.passed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
