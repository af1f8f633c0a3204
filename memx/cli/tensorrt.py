"""`memx doctor` and `memx build`: TensorRT readiness and engines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from memx.cli.app import EXIT_CHECK_FAILED, Outcome, command, err, out
from memx.progress import Stopwatch
from memx.errors import InputError, expect_choice


@command(examples=["memx doctor gmat.memx", "memx doctor gmat.memx --trt-version 10.3 --target-cc sm87    (Jetson Orin, JetPack 6)",
                   "memx doctor model.onnx --json"])
def doctor(
    package: Path = typer.Argument(..., help="Package directory (or a bare .onnx file)."),
    target: str = typer.Option("tensorrt", help="What to check for: tensorrt."),
    trt_version: Optional[str] = typer.Option(None, help="TensorRT version to check against, e.g. 10.3 (JetPack 6) or 11.4. Default: the installed tensorrt, else the latest known."),
    target_cc: Optional[str] = typer.Option(None, help="GPU compute capability (sm87 Jetson Orin, sm89, sm90, ...): enables the FP8 check."),
) -> None:
    """Static check of a package for TensorRT, no GPU needed: unsupported ops and dtypes,
    dynamic-shape problems, custom ops with/without plugin (by TensorRT version), Q/DQ that
    TensorRT rejects. Every finding comes with its fix. Exit 1 when there are errors."""
    from memx.tensorrt import diagnose

    report = diagnose(package, target=target, trt_version=trt_version, target_cc=target_cc)
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
    summary = f"doctor: {n_err} error(s), {n_warn} warning(s) for TensorRT {report.trt_version}"
    return Outcome(summary, report.to_dict(), 0 if report.ok else EXIT_CHECK_FAILED)


@command(examples=["memx build gmat.memx", "memx build gmat.memx --batch 1,4,8 --segment-len 1,16,32 --target-cc sm87",
                   "memx build rmt.memx --timing-cache trt.cache --version-compatible --json",
                   "memx build gmat-int8.memx --backend onnxruntime    (ONNX Runtime CPU: fused attention, GELU, int8 MatMul; checked over 256 segments)",
                   "memx build gmat.memx --backend onnxruntime --passes attention,gelu --check-segments 1024",
                   "memx build gmat.memx --backend onnxruntime --remove"])
def build(
    package: Path = typer.Argument(..., help="Package directory; builds are added to it (tensorrt: engines/GRAPH.plan; onnxruntime: onnxruntime-cpu/GRAPH-HASH.onnx; "
                                    "and what was built in memx.json)."),
    backend: str = typer.Option("tensorrt", help="tensorrt (engines), or onnxruntime (graphs rewritten into ONNX Runtime's fused CPU kernels, run by "
                                "every runtime on the CPU provider)."),
    passes: Optional[str] = typer.Option(None, help="onnxruntime: the graph passes, comma-separated (default: all, with int8-matmul-u8u8 instead of int8-matmul on x86 CPUs without VNNI; see memx.runtimes.onnxruntime_passes)."),
    check_segments: Optional[int] = typer.Option(None, help="onnxruntime: segments (of 4 streams) the rewritten graphs are checked over against the graphs as "
                                                 "exported (default 256; 0: no check)."),
    remove: bool = typer.Option(False, "--remove", help="onnxruntime: take the CPU build out of the package."),
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
    reference body, and the output says which.

    With --backend onnxruntime: the graphs rewritten into ONNX Runtime's fused CPU kernels
    (attention, GELU, Q/DQ MatMul + bias), loaded once, and checked over many segments against
    the graphs as exported (the precision gate of memx validate --against); only then written.
    Runtimes on the CPU provider alone (Python and C++) run them from then on; the graphs as
    exported stay for every other runtime."""
    if backend not in ("onnxruntime", "tensorrt"):
        raise expect_choice("backend", backend, ["onnxruntime", "tensorrt"])
    tensorrt_only = {"--segment-len": segment_len or None, "--batch": batch, "--version-compatible": version_compatible or None, "--timing-cache": timing_cache,
                     "--target-cc": target_cc, "--plugin": None if plugin == "auto" else plugin, "--no-decode": None if decode else True}
    onnxruntime_only = {"--passes": passes, "--check-segments": check_segments, "--remove": remove or None}
    given = [k for k, v in (tensorrt_only if backend == "onnxruntime" else onnxruntime_only).items() if v is not None]
    if given:
        raise InputError(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the other backend",
                         expected=f"options of --backend {backend}", actual=", ".join(given),
                         hint="`memx build --help` says which backend each option is for")
    if backend == "onnxruntime":
        return _build_onnxruntime(package, passes, 256 if check_segments is None else check_segments, remove)
    from memx.tensorrt import build_engines

    build_engines(package, batch=batch, segment_len=segment_len, target_cc=target_cc, version_compatible=version_compatible,
                  timing_cache=timing_cache, plugin=plugin, decode=decode, progress=Stopwatch(err))
    from memx.cli.render import engine_table
    from memx.exporter import Package
    from memx.inspection import engine_facts

    engines = engine_facts(Package.open(package))
    out.print(engine_table(engines, f"TensorRT engines in {package}"))
    return Outcome(f"built {len(engines)} engine(s) into {package}/engines", {"package": str(package), "engines": engines})


def _build_onnxruntime(package: Path, passes: Optional[str], check_segments: int, remove: bool) -> Outcome:
    """`memx build --backend onnxruntime`: the CPU build (memx.runtimes.onnxruntime_build)."""
    from memx.runtimes.onnxruntime_build import build_cpu, remove_cpu_build

    if remove:
        removed = remove_cpu_build(package)
        summary = f"removed the ONNX Runtime CPU build from {package}" if removed else f"{package} has no ONNX Runtime CPU build: nothing to remove"
        return Outcome(summary, {"package": str(package), "removed": removed})
    if check_segments < 0:
        raise InputError("--check-segments must not be negative", expected=">= 0", actual=check_segments)
    from memx.validation.drift import cpu_build_check

    names = [n.strip() for n in passes.split(",") if n.strip()] if passes else None
    check = cpu_build_check(segments=check_segments) if check_segments else None
    entry = build_cpu(package, passes=names, check=check, progress=Stopwatch(err))
    from memx.cli.render import cpu_build_table

    out.print(cpu_build_table(entry, f"ONNX Runtime CPU build in {package}"))
    if "check" in entry:
        out.print(escape(entry["check"]["verdict"]), highlight=False)
    return Outcome(f"built {len(entry['graphs'])} graph(s) for ONNX Runtime {entry['onnxruntime']} (CPU) into {package}/onnxruntime-cpu",
                   {"package": str(package), "onnxruntime_cpu": entry})
