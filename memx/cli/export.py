"""`memx export` and `memx validate`: a package from a model, and its long-horizon checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from memx.cli.app import EXIT_CHECK_FAILED, Outcome, command, err, out
from memx.cli.render import print_drift, print_parity
from memx.formatting import format_shape
from memx.errors import InputError, expect_choice
from memx.package.files import write_text_atomic
from memx.progress import Stopwatch


@command(examples=["memx export gmat-majority --out gmat.memx",
                   "memx export rmt-small --checkpoint my.safetensors --segment-len 128 --out rmt.memx --force",
                   "memx export my_project.export:make_step --config '{\"layers\": 4}' --out mine.memx"])
def export(
    target: str = typer.Argument(..., help="A trained zoo model or a preset name (see `memx zoo`), or your own model: package.module:function returning memx.wrap(...)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Package directory to write (NAME.memx)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to load (.safetensors, names/shapes checked strictly)."),
    segment_len: Optional[int] = typer.Option(None, help="Longest segment the package accepts (default: the model's maximum)."),
    opset: int = typer.Option(18, help="ONNX opset (>= 17)."),
    seed: int = typer.Option(0, help="Seed for the initial weights when no checkpoint is given."),
    verify_segments: int = typer.Option(32, help="Segments of parity check before the package is written (0: skip)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package (atomically)."),
    inline_custom_ops: bool = typer.Option(False, "--inline-custom-ops", help="Export sparse attention as plain ONNX ops instead of memx custom ops (each with a reference body)."),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Causal families: also export the decode graphs (memx generate: token by token inside a segment)."),
    skip_contract_checks: bool = typer.Option(False, "--skip-contract-checks", help="Experts: do not check padding invariance, reset and empty rows on the module first (recorded in the manifest)."),
    config: Optional[str] = typer.Option(None, help="Your model's config for a package.module:function target: JSON, or @FILE.json (the function gets it as config['user'])."),
) -> None:
    """Export one segment step of a model to a memx package (ONNX + manifest).

    GMAT's sparse attention becomes one memx.LocalGlobalAttention node per layer with a
    model-local reference body: ONNX Runtime runs the C++ kernel when libmemx_ops is built
    (`make ops`), the body otherwise; TensorRT parses the body unless a plugin claims the node."""
    from memx.exporter import export_factory, export_preset

    options = dict(segment_len=segment_len, opset=opset, force=force, verify_segments=verify_segments, inline_custom_ops=inline_custom_ops,
                   contract_checks=not skip_contract_checks, decode=decode, progress=Stopwatch(err))
    if ":" in target:
        pkg = export_factory(target, out_dir, config=_config_json(config), checkpoint=checkpoint, **options)
    else:
        pkg = export_preset(target, out_dir, seed=seed, checkpoint=checkpoint, **options)
    m = pkg.manifest
    states = ", ".join(f"{s.name}{format_shape(s.shape)}" for s in m.state) or "none (stateless step)"
    if m.decode is not None:
        out.print(f"decode graphs written: memx generate {pkg.path} (token by token, segments of up to {m.decode.capacity} tokens)", highlight=False)
    data = {"package": str(pkg.path), "family": m.family, "preset": m.preset, "precision": m.precision,
            "state": {s.name: list(s.shape) for s in m.state}, "graphs": [g.name for g in m.graphs],
            "decode_graphs": [g.name for g in m.decode.graphs] if m.decode else [], "custom_ops": list(m.custom_ops or [])}
    return Outcome(f"wrote {pkg.path} ({m.family}, {m.precision}, state: {states})", data)


def _config_json(text: Optional[str]) -> dict:
    """--config: JSON text or @FILE; an object."""
    if text is None:
        return {}
    source = "--config"
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise InputError("--config file not found", expected="an existing JSON file", actual=str(path))
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{source} is not JSON ({e.msg} at line {e.lineno}, column {e.colno})", expected="a JSON object", actual=text[:80]) from None
    if not isinstance(value, dict):
        raise InputError(f"{source} is not a JSON object", expected="{...}", actual=type(value).__name__)
    return value


@command(examples=["memx validate gmat.memx",
                   "memx validate rmt.memx --segments 1024 --batch 8 --report parity.json",
                   "memx validate gmat-int8.memx --against gmat.memx --max-accuracy-drop 0.5",
                   "memx validate rmt.memx --backend torch --teacher-forced --json"])
def validate(
    package: Path = typer.Argument(..., help="Package directory."),
    segments: Optional[int] = typer.Option(None, help="Segments to run (default 256 for parity, 1024 for quantized packages; long streams catch drift one step cannot)."),
    backend: str = typer.Option("onnxruntime", help="Backend to check against the PyTorch reference."),
    device: str = typer.Option("cpu", help="Device for the backend (cpu, cuda, tensorrt)."),
    batch: int = typer.Option(4, help="Streams run side by side."),
    atol: float = typer.Option(1e-4, help="Absolute tolerance for outputs and states (fp32 parity)."),
    seed: int = typer.Option(0, help="Seed of the random streams."),
    report_file: Optional[Path] = typer.Option(None, "--report", help="Write the report as JSON to this file (--json prints it on stdout)."),
    record: bool = typer.Option(True, help="Record the result in the package manifest."),
    kernels: str = typer.Option("auto", help="memx custom ops on onnxruntime: auto (libmemx_ops if built), on (require it), off (reference bodies)."),
    graph_passes: str = typer.Option("none", "--graph-passes", help="onnxruntime: memx's rewrites into fused CPU kernels, in memory (none: the graph the session "
                                     "runs as it is; auto: all on the CPU provider; or names: attention,gelu,int8-matmul); a graph the package's CPU build covers "
                                     "runs that instead (see --cpu-build)."),
    cpu_build: str = typer.Option("auto", "--cpu-build", help="onnxruntime: the graphs `memx build --backend onnxruntime` wrote into the package: auto (on the CPU "
                                  "provider alone, where the package has them), on (required), off (the graphs as exported)."),
    against: Optional[str] = typer.Option(None, help="Precision check: compare with 'torch' (the fp32 reference weights) or an fp32 package DIR; "
                                          "per-segment drift, top-1 agreement/KL, task accuracy; plot and JSON saved in DIR/reports. Default for quantized packages: torch."),
    max_accuracy_drop: float = typer.Option(1.0, help="Precision check: the largest task accuracy drop (percentage points) that passes."),
    drift_tol: float = typer.Option(0.05, help="Precision check: state relative error that counts as divergence."),
    min_agreement: float = typer.Option(0.95, help="Precision check of a package without a task, and the decode check of a quantized package: the lowest mean top-1 agreement that passes."),
    max_kl: float = typer.Option(0.05, help="Precision check of a package without a task: the largest mean KL(reference || package) of the logits that passes."),
    reference: Optional[str] = typer.Option(None, help="The code that builds the PyTorch reference of a model that is not a memx family: package.module:function (called with the manifest's config)."),
    teacher_forced: bool = typer.Option(False, "--teacher-forced", help="Parity: start every segment of the backend from the reference's state (one step's error at every depth; for memories that amplify rounding)."),
    trust_reference: bool = typer.Option(False, "--trust-reference", help="Import the reference factory the package records (this runs code the package names: only for packages you trust)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Refuse a package whose files do not match their sha256 (default), or check sizes only."),
    decode_segments: int = typer.Option(64, "--decode-segments", help="Packages with decode graphs: segments appended token by token and compared with whole steps (0: skip)."),
) -> None:
    """Check a package over long streams: fp32 parity with PyTorch (outputs and states within
    --atol), or, for quantized packages (or with --against), drift and task accuracy. A package
    with decode graphs is also checked token by token against its own step (--decode-segments)."""
    from memx.validation.check import check_package
    from memx.validation.drift import DriftReport

    choices = {"auto": None, "on": True, "off": False}
    if kernels not in choices:
        raise expect_choice("--kernels value", kernels, list(choices))
    builds = {"auto": "auto", "on": True, "off": False}
    if cpu_build not in builds:
        raise expect_choice("--cpu-build value", cpu_build, list(builds))
    options = {"custom_op_library": choices[kernels], "graph_passes": graph_passes, "cpu_build": builds[cpu_build]} if backend == "onnxruntime" else {}
    reference_options = {"factory": reference} if reference else {"trust_package_factory": True} if trust_reference else {}
    report = check_package(package, backend=backend, device=device, against=against, segments=segments, batch=batch, atol=atol, seed=seed,
                           drift_tol=drift_tol, max_accuracy_drop=max_accuracy_drop, min_top1_agreement=min_agreement, max_kl=max_kl, backend_options=options, reference_options=reference_options,
                           record=record, teacher_forced=teacher_forced, verify=verify)
    if isinstance(report, DriftReport):
        print_drift(report)
        out.print("report: " + ", ".join(str(package / p) for p in report.reports.values()), highlight=False)
    else:
        print_parity(report)
    decode = _check_decode(package, backend, options, decode_segments, batch, atol, seed, verify, min_agreement)
    data = {**report.to_dict(), **({"decode": decode.to_dict()} if decode else {})}
    if report_file:
        write_text_atomic(report_file, json.dumps(data, indent=1) + "\n")
    passed = report.passed and (decode is None or decode.passed)
    kind = "precision" if isinstance(report, DriftReport) else "parity"
    summary = f"{kind} {'PASS' if report.passed else 'FAIL'} over {data.get('segments', segments)} segments" + \
        (f", decode {'PASS' if decode.passed else 'FAIL'}" if decode is not None else "") + f": {package}"
    return Outcome(summary, data, 0 if passed else EXIT_CHECK_FAILED)


def _check_decode(package: Path, backend: str, options: dict, segments: int, batch: int, atol: float, seed: int, verify: bool, min_top1: float):
    """Decode parity of a package with decode graphs (None when it has none or segments is 0)."""
    from memx.exporter import Package
    from memx.validation.decode import check_decode

    pkg = Package.open(package, verify=verify)
    if segments <= 0 or pkg.manifest.decode is None or backend not in ("onnxruntime", "torch"):
        return None
    report = check_decode(pkg, backend=backend, segments=segments, batch=batch, atol=atol, seed=seed, min_top1=min_top1, backend_options=options)
    style = "green" if report.passed else "bold red"
    out.print(f"[{style}]{report.summary()}[/]", highlight=False, soft_wrap=True)
    return report
