"""`memx inspect` and `memx zoo`: what a package holds, the trained models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from memx.cli.app import Outcome, command, out
from memx.cli.render import cpu_build_table, engine_table, print_quantization, shape_text, state_summary


@command(examples=["memx inspect gmat.memx", "memx inspect gmat-int8.memx --json", "memx inspect big.memx --no-verify"])
def inspect(
    package: Path = typer.Argument(..., help="Package directory."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every file's sha256 (default), or sizes only."),
) -> None:
    """Show a package: state tensors, graph inputs/outputs, ops, precision, size, what runs its
    custom ops, the TensorRT engines memx build added, validation."""
    from memx.exporter import Package
    from memx.formatting import human_bytes
    from memx.inspection import describe_package

    info = describe_package(Package.open(package, verify=verify))
    out.print(f"[bold]{info['path']}[/]  family={info['family']} preset={info['preset']} precision={info['precision']} "
              f"format v{info['format_version']} size={human_bytes(info['size_bytes'])}", highlight=False)
    out.print(f"vocab {info['vocab_size']}, segment length {info['segment']['min']}..{info['segment']['max']}, "
              f"state per stream {human_bytes(info['state_bytes_per_stream'])}, model id {info['model_id'][:16]}", highlight=False)
    st = Table(title="state (carried between segments)")
    for col in ("name", "shape", "dtype", "precision", "graph input → output"):
        st.add_column(col)
    for s in info["state"]:
        st.add_row(s["name"], shape_text(s["shape"]), s["dtype"], s["precision"], f"{s['input']} → {s['output']}")
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
            io.add_row("in", t["name"] + (f" (from {source})" if source else ""), t["dtype"], shape_text(t["shape"]))
        for t in g["outputs"]:
            io.add_row("out", t["name"], t["dtype"], shape_text(t["shape"]))
        out.print(io)
        out.print("ops: " + ", ".join(f"{k}×{v}" for k, v in g["ops"].items()), highlight=False)
        out.print("custom ops: " + (", ".join(f"{c['domain']}.{c['op']}×{c['count']}" for c in g["custom_ops"]) or "none"), highlight=False)
    d = info["decode"]
    if d:
        from memx.formatting import human_bytes

        graphs = ", ".join(f"{g['name']} ({g['file']}, {g['nodes']} nodes)" for g in d["graphs"])
        out.print(f"decode graphs (memx generate): {graphs}; "
                  f"segments of up to {d['capacity']} tokens; cache per stream {human_bytes(d['cache_bytes_per_stream'])} in {len(d['cache'])} tensors", highlight=False)
    else:
        out.print("decode graphs: none (this package steps whole segments only)", highlight=False)
    if info["engines"]:
        out.print(engine_table(info["engines"], "TensorRT engines (memx build)"))
    else:
        out.print("TensorRT engines: none (memx build adds them)", highlight=False)
    if info["onnxruntime_cpu"]:
        out.print(cpu_build_table(info["onnxruntime_cpu"], "ONNX Runtime CPU build (memx build --backend onnxruntime)"))
    else:
        out.print("ONNX Runtime CPU build: none (memx build --backend onnxruntime adds one)", highlight=False)
    for op in info["custom_op_kernels"]:
        kt = Table(title=f"custom op {op['domain']}.{op['op']} v{op['version']}: what runs it")
        kt.add_column("backend", no_wrap=True)
        kt.add_column("runs")
        for backend_name, how in op["backends"].items():
            kt.add_row(backend_name, escape(how))
        out.print(kt)
    if info["quantization"]:
        try:
            print_quantization(info["quantization"])
        except (KeyError, TypeError, ValueError, AttributeError):  # a free-form record, edited by hand
            out.print("quantization: a record memx cannot read (memx.json edited?)")
    if info["validation"]:
        for key, v in info["validation"].items():
            try:
                out.print(validation_line(key, v), highlight=False, emoji=False, markup=False)
            except (KeyError, TypeError, ValueError, AttributeError):
                out.print(f"validation {key}: a record memx cannot read (memx.json edited?)", highlight=False, emoji=False, markup=False)
    else:
        out.print("validation: not run (memx validate records it)")
    return Outcome(f"{info['path']}: {info['family']}, {info['precision']}, {human_bytes(info['size_bytes'])}", info)


def validation_line(key: str, v: dict) -> str:
    """One recorded validation result (memx validate / memx quantize --check) as a line."""
    verdict = "PASS" if v["passed"] else "FAIL"
    if key.startswith("precision:"):
        acc = v.get("task_accuracy")
        what = f"task {acc['candidate']:.2%} vs {acc['reference']:.2%} ({-acc['drop_points']:+.2f} points)" if acc else \
            f"top-1 agreement {v['summary']['top1_agreement_mean']:.2%}"
        return f"validation {key}: {verdict}, {what} over {v['segments']} segments"
    return f"validation {key}: {verdict}, max error {v['max_error']:.3g} over {v['segments']} segments"


@command(examples=["memx zoo", "memx zoo --json"])
def zoo() -> Outcome:
    """List model families, presets and the trained zoo models."""
    from memx.inspection import zoo_catalogue

    catalogue = zoo_catalogue()
    rows, trained = catalogue["presets"], catalogue["zoo"]
    table = Table(title=f"memx zoo: families {', '.join(catalogue['families'])}")
    for col in ("preset", "family", "params"):
        table.add_column(col, no_wrap=True)
    table.add_column("state per stream")
    table.add_column("S max", no_wrap=True)
    table.add_column("description")
    for r in rows:
        state = state_summary(r["state"], r["state_bytes"])
        params = f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] >= 1e6 else f"{r['parameters'] / 1e3:.1f}k"
        table.add_row(r["preset"], r["family"], params, state, str(r["max_segment_len"]), r["description"])
    out.print(table)
    items = trained[0]["held_out_items"] if trained else 0
    z = Table(title=f"trained zoo models (memx export NAME --out DIR; accuracy through ONNX Runtime on {items:,} held-out episodes, docs/zoo.md)")
    for col in ("name", "family", "task", "segment", "metric", "accuracy", "chance"):
        z.add_column(col, no_wrap=True)
    for e in trained:
        acc = f"{e['accuracy']:.1%}" if e["accuracy"] is not None else "—"
        z.add_row(e["name"], e["family"], e["task"], str(e["segment_len"]), e["metric"], acc if e["available"] else "[red]checkpoint missing[/]", f"{e['chance']:.1%}")
    out.print(z)
    for e in trained:
        out.print(f"[bold]{e['name']}[/]: {escape(e['description'])}")
    return Outcome(f"{len(catalogue['families'])} families, {len(rows)} presets, {len(trained)} trained zoo models", catalogue)
