#!/usr/bin/env python
"""The Python runtime's cost: memx `Stream.step` over a chained bare `InferenceSession.run`.

Both contenders run the same package's step graph(s) with the same session options on the
same tokens, the bare one feeding each state output back as the next state input by hand
(what a user writes without memx). Rounds alternate between the two in one process; the
table shows the median per-step time of each and the overhead ratio, for packages with few
and many state tensors at B=1 and B=8. Target (the re-layering issue): <= 10% over bare.

    python benchmarks/runtime_overhead.py
    python benchmarks/runtime_overhead.py --presets rmt-tiny,infformer-small --batches 1 --steps 400
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memx import runtimes
from memx.exporter import Package, export_preset
from memx.profiling.stats import machine

DEFAULT_PRESETS = "rmt-tiny,kvcache-tiny,infformer-tiny,infformer-small"


def export(preset: str, work: Path) -> Package:
    out = work / f"{preset}.memx"
    return Package.open(out) if out.is_dir() else export_preset(preset, out, verify_segments=0)


def bare_loop(rt: runtimes.Runtime, batch: int, segment: int):
    """A hand-written step loop over the backend's own sessions: returns step(tokens)."""
    m = rt.manifest
    sessions = rt.backend._sessions  # the same InferenceSession objects memx runs
    graphs = list(m.graphs)
    names = {g.name: [o.name for o in g.outputs] for g in graphs}
    state = {s.input: np.zeros((batch, *s.shape[1:]), dtype=s.dtype) for s in m.state}
    pairs = [(s.input, s.output) for s in m.state]
    lengths = np.full(batch, segment, dtype=np.int64)
    reset = np.zeros(batch, dtype=bool)

    def step(tokens: np.ndarray) -> None:
        values = {"tokens": tokens, "lengths": lengths, "reset": reset, **state}
        for g in graphs:
            feeds = {t.name: values[t.name] for t in g.inputs}
            values.update(zip(names[g.name], sessions[g.name].run(names[g.name], feeds)))
        for i, o in pairs:
            state[i] = values[o]

    return step


def time_steps(step, tokens: list[np.ndarray]) -> float:
    """Seconds per step over ``tokens``."""
    t0 = time.perf_counter()
    for t in tokens:
        step(t)
    return (time.perf_counter() - t0) / len(tokens)


def measure(pkg: Package, batch: int, steps: int, rounds: int, threads: int) -> dict:
    rt = runtimes.open(pkg, backend="onnxruntime", intra_op_threads=threads)
    m = rt.manifest
    seg = m.segment["max"]
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, m.vocab_size, (batch, seg), dtype=np.int64) for _ in range(steps)]
    stream, bare = rt.stream(batch), bare_loop(rt, batch, seg)
    memx_step = stream.step
    for t in tokens[:20]:  # warm-up both
        memx_step(t)
        bare(t)
    memx_t, bare_t = [], []
    for _ in range(rounds):
        memx_t.append(time_steps(memx_step, tokens))
        bare_t.append(time_steps(bare, tokens))
    mm, bm = statistics.median(memx_t), statistics.median(bare_t)
    return {"preset": m.preset, "states": len(m.state), "batch": batch, "segment": seg, "memx_us": mm * 1e6, "bare_us": bm * 1e6, "overhead": mm / bm - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=200, help="steps per round")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per contender")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (1: the least noise)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the exported packages (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure(export(p, work), b, args.steps, args.rounds, args.threads) for p in args.presets.split(",") for b in map(int, args.batches.split(","))]
    print(f"# Stream.step vs chained bare InferenceSession.run — {machine()['cpu']}, {args.threads} ORT thread(s), medians of {args.rounds} rounds x {args.steps} steps")
    print("| preset | states | B×S | memx Stream.step (µs) | bare session.run (µs) | overhead |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['states']} | {r['batch']}×{r['segment']} | {r['memx_us']:.0f} | {r['bare_us']:.0f} | {100 * r['overhead']:+.1f}% |")


if __name__ == "__main__":
    main()
