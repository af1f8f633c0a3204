#!/usr/bin/env python
"""Per-segment latency of quantized packages in ONNX Runtime (CPU): fp32 vs int8-qdq vs
int8-dynamic vs fp16, next to what each costs in accuracy.

For each preset the fp32 package is exported once and quantized with every method
(default policy: the memory path stays fp32). Rounds are interleaved (each round steps
every contender once on the same tokens, in rotating order) so machine drift hits all
alike; the table has medians, p90 and the speed-up over fp32, plus the top-1 agreement
of each contender's logits with fp32's on the timed stream itself. The `small` presets
are untrained, so their task accuracy means nothing; the accuracy delta column is that of
the trained zoo model of the same family (quantized the same way, >= 1,000 segments).

Every package runs through memx's ONNX Runtime backend; rows ending in ``+built`` run a copy
of the package with its CPU build (`memx build --backend onnxruntime`, here without its check:
memx.runtimes.onnxruntime_passes' attention -> MultiHeadAttention, GELU -> FastGelu, Q/DQ
MatMul + bias -> MatMulIntegerToFloat, written into the package and run by default on the CPU),
the others the graphs as exported. ``--flush-denormals`` runs every contender with ONNX
Runtime's denormals-as-zero (masked attention makes denormal probabilities on the CPU). ``int8-qdq-old`` is the int8-qdq writer
before issue 22 (one activation Q/DQ pair shared by its consumers, Q/DQ on MatMul outputs
too): where int8-qdq started. The "fused" column counts, per int8-qdq package, the
quantized MatMul groups ONNX Runtime (ORT_ENABLE_ALL) turns into integer kernels out of all
of them in the step graphs (without memx's passes).

    python benchmarks/quantized_latency.py                       # gmat-small, memtr-small; B=1 and B=8, S=128
    python benchmarks/quantized_latency.py --shapes 1x128 --threads 1 --no-accuracy
    python benchmarks/quantized_latency.py --shapes 1x128 --threads 1 --no-accuracy --flush-denormals
    python benchmarks/quantized_latency.py --presets rmt-small --rounds 200 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from step_latency import machine  # noqa: E402

from memx import runtimes  # noqa: E402
from memx.calibration import quantize_package  # noqa: E402
from memx.calibration.methods.int8_qdq import Int8QDQ  # noqa: E402
from memx.calibration.qdq_fanout import fused_matmul_groups  # noqa: E402
from memx.exporter import export_preset  # noqa: E402
from memx.package.files import Package  # noqa: E402
from memx.runtimes.onnxruntime_build import build_cpu  # noqa: E402

METHODS = ["int8-qdq", "int8-dynamic", "fp16"]
OLD_QDQ = "int8-qdq-old"  # int8-qdq as written before issue 22, run without graph passes
BUILT = "+built"  # suffix: a copy of the package with its CPU build (memx build --backend onnxruntime)
ZOO_OF_FAMILY = {"gmat": "gmat-majority", "memtr": "memtr-majority", "rmt": "rmt-ar", "memformer": "memformer-majority", "infformer": "infformer-sort"}


@contextlib.contextmanager
def old_int8_qdq_writer() -> Iterator[None]:
    """int8-qdq as memx wrote it before issue 22: one Q/DQ pair per activation, shared by its
    consumers, and Q/DQ on MatMul outputs."""
    saved = Int8QDQ._private_activation_qdq, Int8QDQ._matmul_output_qdq
    Int8QDQ._private_activation_qdq, Int8QDQ._matmul_output_qdq = False, True
    try:
        yield
    finally:
        Int8QDQ._private_activation_qdq, Int8QDQ._matmul_output_qdq = saved


def fused_count(pkg) -> str:
    """'fused/groups' over the step graphs of a Q/DQ package (ONNX Runtime CPU, ORT_ENABLE_ALL)."""
    counts = [fused_matmul_groups(pkg.file(g.file)) for g in pkg.manifest.graphs]
    return f"{sum(c.groups - len(c.unfused) for c in counts)}/{sum(c.groups for c in counts)}"


def with_cpu_build(pkg, out: Path):
    """A copy of ``pkg`` with its CPU build (no check: the benchmark measures speed)."""
    shutil.copytree(pkg.path, out)
    build_cpu(out)
    return Package.open(out)


def measure(packages: dict[str, object], batch: int, seg: int, rounds: int, warmup: int, seed: int = 0, threads: int | None = None,
            flush_denormals: bool = False) -> tuple[dict, dict]:
    """Latency (ms) per contender, and top-1 agreement with the first contender's logits."""
    names = list(packages)
    options = {"intra_op_threads": threads, "inter_op_threads": 1} if threads else {}
    options["flush_denormals"] = flush_denormals
    streams = {n: runtimes.open(p, backend="onnxruntime", **options).stream(batch) for n, p in packages.items()}
    vocab = packages[names[0]].manifest.vocab_size
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {n: [] for n in names}
    agree: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        tokens = rng.integers(0, vocab, size=(batch, seg))
        k = r % len(names)
        outs = {}
        for name in names[k:] + names[:k]:  # rotate who goes first
            t0 = time.perf_counter()
            outs[name] = streams[name].step(tokens)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt * 1e3)
        ref = outs[names[0]]["logits"].argmax(-1)
        for name in names:
            agree[name].append(float((outs[name]["logits"].argmax(-1) == ref).mean()))
    return {n: np.asarray(v) for n, v in times.items()}, {n: float(np.mean(v)) for n, v in agree.items()}


def zoo_accuracy_delta(family: str, tmp: Path) -> dict[str, float]:
    """Accuracy drop (points) of each method on the family's zoo model, >= 1,000 segments."""
    from memx.validation.accuracy import runtime_task_accuracy
    from memx.training.tasks import get_task
    from memx.zoo import get_zoo

    name = ZOO_OF_FAMILY.get(family)
    if name is None:
        return {}
    entry = get_zoo(name)
    per_item = get_task(entry.task).make(np.random.default_rng(0), 1, entry.segment_len).n_segments
    items = max(200, -(-1000 // per_item))
    fp32 = export_preset(name, tmp / f"{name}.memx", verify_segments=0)

    def score(pkg) -> float:
        return entry.score(runtime_task_accuracy(runtimes.open(pkg), entry.task, items=items, segment_len=entry.segment_len))

    base = score(fp32)
    deltas = {"fp32": 0.0}
    for method in METHODS:
        q = quantize_package(fp32, tmp / f"{name}-{method}.memx", method=method, progress=False).package
        deltas[method] = 100 * (score(q) - base)
    return deltas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="gmat-small,memtr-small")
    ap.add_argument("--shapes", default="1x128,8x128", help="BxS list")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own choice)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the zoo accuracy deltas")
    ap.add_argument("--flush-denormals", action="store_true", help="ONNX Runtime's denormals-as-zero for every contender")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for preset in args.presets.split(","):
            fp32 = export_preset(preset, tmp / f"{preset}.memx", verify_segments=0)
            packages = {"fp32": fp32, "fp32" + BUILT: with_cpu_build(fp32, tmp / f"{preset}-built.memx")}
            for method in METHODS:
                packages[method] = quantize_package(fp32, tmp / f"{preset}-{method}.memx", method=method, calib_segments=32, progress=False).package
                if method.startswith("int8"):
                    packages[method + BUILT] = with_cpu_build(packages[method], tmp / f"{preset}-{method}-built.memx")
                if method == "int8-qdq":
                    with old_int8_qdq_writer():
                        packages[OLD_QDQ] = quantize_package(fp32, tmp / f"{preset}-{OLD_QDQ}.memx", method=method, calib_segments=32, progress=False).package
            fused = {name: fused_count(p) for name, p in packages.items() if p.manifest.precision == "int8-qdq" and not name.endswith(BUILT)}
            deltas = {} if args.no_accuracy else zoo_accuracy_delta(fp32.manifest.family, tmp)
            for shape in args.shapes.split(","):
                b, s = (int(x) for x in shape.split("x"))
                t, agree = measure(packages, b, s, args.rounds, args.warmup, threads=args.threads, flush_denormals=args.flush_denormals)
                base, built = float(np.median(t["fp32"])), float(np.median(t["fp32" + BUILT]))
                for name in packages:
                    med = float(np.median(t[name]))
                    rows.append({"preset": preset, "B": b, "S": s, "precision": name, "median_ms": med, "p90_ms": float(np.percentile(t[name], 90)),
                                 "speedup_vs_fp32": base / med, "speedup_vs_fp32_built": built / med, "top1_agreement_vs_fp32": agree[name], "fused_matmuls": fused.get(name),
                                 "zoo_model": ZOO_OF_FAMILY.get(fp32.manifest.family), "zoo_accuracy_delta_points": deltas.get(name)})

    threads = f"{args.threads} intra-op thread(s)" if args.threads else "ONNX Runtime's default threads"
    daz = "; denormals flushed to zero" if args.flush_denormals else ""
    print(f"\nONNX Runtime CPU per-segment latency, {args.rounds} interleaved rounds after {args.warmup} warm-up, {threads}{daz}; {machine()}")
    print(f"speed-up = fp32 median / row median (vs built: fp32{BUILT}'s); agreement = top-1 of the logits equal to fp32's on the timed stream;")
    print(f"fused = quantized MatMul groups ONNX Runtime runs as integer kernels / all of them; {OLD_QDQ} = int8-qdq as written before issue 22;")
    print(f"rows named *{BUILT} run the package's CPU build (memx build --backend onnxruntime), the others the graphs as exported;")
    print("zoo Δ = task accuracy change (points) of the family's trained zoo model quantized the same way (>= 1,000 segments)")
    head = f"{'preset':<13}{'B':>3}{'S':>5}  {'precision':<20}{'median ms':>10}{'p90 ms':>9}{'speed-up':>10}{'vs built':>10}{'agreement':>11}{'fused':>8}  {'zoo Δ':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        delta = f"{r['zoo_accuracy_delta_points']:+.2f}" if r["zoo_accuracy_delta_points"] is not None else "—"
        print(f"{r['preset']:<13}{r['B']:>3}{r['S']:>5}  {r['precision']:<20}{r['median_ms']:>10.2f}{r['p90_ms']:>9.2f}"
              f"{r['speedup_vs_fp32']:>9.2f}x{r['speedup_vs_fp32_built']:>9.2f}x{r['top1_agreement_vs_fp32']:>10.1%}{r['fused_matmuls'] or '—':>8}  {delta:>8}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
