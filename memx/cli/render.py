"""Rendering for the `memx` command: tables and summaries of reports (no decisions)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from memx.cli.app import out
from memx.formatting import format_shape


def shape_text(shape: list) -> str:
    """A shape for rich output: "[batch, 16]" would otherwise be read as a markup tag."""
    return escape(format_shape(shape))


def print_drift(report: Any) -> None:
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
        out.print("no task accuracy: the package names no task (zoo models do); the logits' agreement and KL decide", highlight=False)
    style = "green" if report.passed else "bold red"
    out.print(f"[{style}]{report.verdict}[/]: {escape(report.gate_text())}; state drift is informational", highlight=False)


def print_quantization(q: dict[str, Any]) -> None:
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


def print_parity(report: Any) -> None:
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


def print_floor(floors: dict[str, Any]) -> None:
    first = next(iter(floors.values()))
    peak = first["peak"]
    out.print(f"floor: {first['flops'] / 1e6:.1f} MFLOP and {first['bytes'] / 2**20:.2f} MiB per step (weights {first['weight_bytes'] / 2**20:.2f} MiB); "
              f"this machine: {peak['gemm_gflops']:.1f} GFLOP/s fp32 GEMM, {peak['copy_gbps']:.1f} GB/s copy; floor {first['floor_ms']:.3f} ms ({first['bound']}-bound)",
              highlight=False)
    for name, f in floors.items():
        out.print(f"  {name}: {f['achieved_gflops']:.2f} GFLOP/s = {f['fraction_of_gemm_peak']:.1%} of the GEMM peak, "
                  f"{f['fraction_of_copy_bandwidth']:.1%} of copy bandwidth; {f['measured_over_floor']:.1f}x the floor", highlight=False)


def print_profile(report: Any) -> None:
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
        print_floor(report.extra["floor"])
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


def engine_table(engines: list[dict[str, Any]], title: str) -> Table:
    """The TensorRT engines of a package (memx.inspection.engine_facts): what memx build prints
    after a build and memx inspect shows later."""
    from memx.formatting import human_bytes

    table = Table(title=title)
    for col in ("graph", "engine", "built with", "for", "precision", "profiles (batch; segment or new tokens)", "custom ops", "build"):
        table.add_column(col, overflow="fold")  # a narrow terminal wraps a long value, never cuts it
    for e in engines:
        if "unreadable" in e:
            table.add_row(escape(str(e.get("graph"))), f"build tags memx cannot read: {escape(e['unreadable'])}", "", "", "", "", "", "")
            continue
        prof = "; ".join(f"{p['batch'][0]}..{p['batch'][2]}" + (f"; {p['segment'][0]}..{p['segment'][2]}" if p["segment"] else "") for p in e["profiles"])
        ops = ", ".join(f"{k}: {v}" for k, v in e["custom_ops"].items()) or "none"
        size = f" ({human_bytes(e['bytes'])})" if e.get("bytes") is not None else " (not listed)"
        table.add_row(e["graph"], f"{e['file']}{size}", f"{e['flavour']} {e['trt_version']}", e["compute_capability"] + (", version-compatible" if e["version_compatible"] else ""),
                      e["precision"] + (" (strongly typed)" if e["strongly_typed"] else ""), escape(prof), escape(ops), f"{e['build_seconds']:.1f}s")
    return table


def cpu_build_table(entry: dict[str, Any], title: str) -> Table:
    """A package's ONNX Runtime CPU build (memx.json ``onnxruntime_cpu``): what memx build
    --backend onnxruntime prints and memx inspect shows."""
    table = Table(title=title)
    for col in ("graph", "file", "built with", "rewrites"):
        table.add_column(col, overflow="fold")
    for graph, file in entry["graphs"].items():
        done = ", ".join(f"{k} {v}" for k, v in entry.get("passes", {}).get(graph, {}).items() if v) or "none"
        table.add_row(escape(graph), escape(file), f"onnxruntime {escape(str(entry.get('onnxruntime')))} (CPU)", escape(done))
    return table


def state_summary(state: dict[str, list[int]], state_bytes: int) -> str:
    """memory[4, 32] for one or two tensors; "6 tensors, 12.1 KiB" for more."""
    if len(state) <= 2:
        return ", ".join(f"{k}{shape_text(v)}" for k, v in state.items()) or "—"
    from memx.formatting import human_bytes

    return f"{len(state)} tensors, {human_bytes(state_bytes)}"
