"""`memx quantize`: a low-precision package that keeps the memory path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from memx.cli.app import Outcome, command, err, out
from memx.errors import MemxError
from memx.package.precisions import method_help


@command(examples=["memx quantize gmat.memx --out gmat-int8.memx",
                   "memx quantize rmt.memx --method int8-qdq --task associative-retrieval --calib-segments 256 --out rmt-int8.memx",
                   "memx quantize rmt.memx --method fp16 --out rmt-fp16.memx --force",
                   "memx quantize rmt.memx --calib tokens.npy --out rmt-int8.memx --json"])
def quantize(
    package: Path = typer.Argument(..., help="An fp32 package directory (memx export)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Quantized package to write (a new directory)."),
    method: str = typer.Option("int8-qdq", help=method_help()),
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
    from memx.validation.sources import TaskSource, load_token_file
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
    qm = result.package.manifest
    for g in qm.graphs + (qm.decode.graphs if qm.decode else []):
        mp = q["graphs"][g.name]["memory_path"]
        kept = f"{len(mp['read'])} / {len(mp['write'])} / {len(mp['other'])}" if q["policy"]["memory_path"] == "excluded" else "none (quantized by policy)"
        if mp.get("float_in_step"):
            kept += f" + {len(mp['float_in_step'])} float as in the step"
        f = facts["graphs"][g.name]
        table.add_row(g.name, kept, f"{f['quantize_linear']} Q, {f['dequantize_linear']} DQ, {f['casts']} Cast",
                      f"{human_bytes(src.manifest.files[g.file].bytes)} -> {human_bytes(result.package.manifest.files[g.file].bytes)}")
    out.print(table)
    c = q.get("calibration")
    if c:
        out.print(f"calibration: {escape(c['source'])}, {c['segments']} segment steps x {c['streams']} streams at depths {c['depths']['min']}..{c['depths']['max']} "
                  f"of a {c['horizon']}-segment rollout ({c['mode']}, {c['method']})", highlight=False)
    out.print(f"state: {q['policy']['description']}", highlight=False)
    data = {"package": str(result.package.path), "method": method, "quantization": q, "facts": facts, "warnings": list(result.warnings)}
    return Outcome(f"wrote {result.package.path}; check it: memx validate {result.package.path}", data)
