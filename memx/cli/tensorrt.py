"""`memx doctor` and `memx build`: TensorRT readiness and engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from memx.cli.app import app, err, errors_to_exit, out
from memx.errors import expect_choice


@app.command()
@errors_to_exit
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
@errors_to_exit
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
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Also build the decode graphs (memx generate) where the package has them: "
                                "batch range as above, 1..capacity new tokens per call, optimized for one."),
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
                         timing_cache=timing_cache, plugin=plugin, decode=decode, progress=lambda msg: err.print(escape(msg), highlight=False))
    from memx.exporter import Package

    pkg = Package.open(package)
    table = Table(title=f"TensorRT engines in {package}")
    for col in ("graph", "engine", "built with", "for", "precision", "profiles (batch; segment or new tokens)", "custom ops", "build"):
        table.add_column(col)
    for t in tags:
        prof = "; ".join(f"{p.batch[0]}..{p.batch[2]}" + (f"; {p.segment[0]}..{p.segment[2]}" if p.segment else "") for p in t.profiles)
        ops = ", ".join(f"{k}: {v}" for k, v in t.custom_ops.items()) or "none"
        table.add_row(t.graph, f"{t.file} ({human_bytes(pkg.manifest.files[t.file].bytes)})", f"{t.flavour} {t.trt_version}", t.compute_capability,
                      t.precision + (" (strongly typed)" if t.strongly_typed else ""), escape(prof), escape(ops), f"{t.build_seconds:.1f}s")
    out.print(table)
