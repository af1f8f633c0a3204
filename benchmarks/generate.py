#!/usr/bin/env python
"""Generation speed, side by side in one run: tokens/s at B=1 and B=8, S=128, greedy, for the
`small` presets that have decode graphs.

Contenders (each generates the same number of tokens after the same one-segment prompt, the
memory written each time a segment of S tokens fills):

  memx decode     Stream.append/generate on ONNX Runtime: the decode graph, one token per call
  memx-run        the same through libmemx (memx-run --generate), when `make cpp` built it
  step rerun      ONNX Runtime's step graph re-run on the growing segment for every token (O(S^2))
  torch eager     the same model's decode functions in PyTorch eager (KV cache, inference_mode)
  memx decode int8-dynamic / int8-qdq
                  the first contender on the package `memx quantize` made (decode graphs quantized
                  as the step; int8-qdq calibrated on 16 random-token segments): --quantized to choose

    python benchmarks/generate.py
    python benchmarks/generate.py --presets rmt-small --batches 1 --tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memx import runtimes
from memx.calibration import quantize_package
from memx.exporter import export_preset
from memx.models import build_preset, presets
from memx.models.decode import DECODE

ROOT = Path(__file__).resolve().parents[1]


def decodable_small() -> list[str]:
    return [p.name for p in presets("small") if build_preset(p.name).decode_support() is None]


def bench_memx(rt, prompt: np.ndarray, n: int, s: int) -> float:
    stream = rt.stream(prompt.shape[0])
    stream.segment_len = s
    stream.append(prompt)
    t0 = time.perf_counter()
    for _ in stream.generate(n, temperature=0):
        pass
    return time.perf_counter() - t0


def bench_step_rerun(rt, prompt: np.ndarray, n: int, s: int) -> float:
    """Every new token re-runs the step graph over the segment so far; a full segment is committed."""
    b = prompt.shape[0]
    state = rt.fresh_state(b)
    states, reset = state.states, np.ones(b, bool)
    _, states = rt.run_step(prompt, np.full(b, s, np.int64), reset, states)  # the prompt: one whole segment
    reset = np.zeros(b, bool)
    segment = np.zeros((b, 0), np.int64)
    nxt = np.zeros((b, 1), np.int64)  # the token after the prompt: as the others, from the last logits
    t0 = time.perf_counter()
    for _ in range(n):
        segment = np.concatenate([segment, nxt], axis=1)
        out, new_states = rt.run_step(segment, np.full(b, segment.shape[1], np.int64), reset, states)
        nxt = out["logits"][:, -1].argmax(-1)[:, None]
        if segment.shape[1] == s:
            states, segment = new_states, np.zeros((b, 0), np.int64)
    return time.perf_counter() - t0


def bench_torch(model, prompt: np.ndarray, n: int, s: int) -> float:
    """The same model's decode_open/decode_tokens in eager PyTorch, committing with its forward."""
    b = prompt.shape[0]
    specs = model.decode_cache_specs(s)
    with torch.inference_mode():
        states = [torch.zeros(b, *sp.shape) for sp in model.state_specs()]
        reset = torch.ones(b, dtype=torch.bool)
        out = model(torch.from_numpy(prompt), torch.full((b,), s), reset, *states)
        states, reset = list(out[1:]), torch.zeros(b, dtype=torch.bool)
        logits = out[0][:, -1]
        seg_tokens, position = [], torch.zeros(b, dtype=torch.long)
        ones = torch.ones(b, dtype=torch.long)
        t0 = time.perf_counter()
        cache = None
        for _ in range(n):
            tok = logits.argmax(-1, keepdim=True)  # (B, 1)
            if cache is None:
                prefix = list(model.decode_open(reset, *states))
                cache = prefix + [torch.zeros(b, *sp.shape) for sp in specs if sp.graph == DECODE]
                n_prefix = len(prefix)
            res = model.decode_tokens(tok, ones, position, *cache)
            logits, cache = res[0][:, -1], cache[:n_prefix] + list(res[1:])
            seg_tokens.append(tok)
            position = position + 1
            if len(seg_tokens) == s:  # full: the step writes the memory
                out = model(torch.cat(seg_tokens, 1), torch.full((b,), s), reset, *states)
                states, seg_tokens, position, cache = list(out[1:]), [], torch.zeros(b, dtype=torch.long), None
        return time.perf_counter() - t0


def bench_memx_run(pkg: Path, prompt: np.ndarray, n: int, s: int, tmp: Path) -> float | None:
    exe = ROOT / "build" / "cpp" / "memx-run"
    if not exe.is_file():
        return None
    np.save(tmp / "prompt.npy", prompt)
    report = tmp / "gen.json"
    subprocess.run([str(exe), str(pkg), "--tokens", str(tmp / "prompt.npy"), "--generate", str(n), "--temperature", "0", "--segment-len", str(s),
                    "--json", str(report), "--quiet"], check=True)
    r = json.loads(report.read_text())
    return r["generate_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(decodable_small()))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--tokens", type=int, default=256, help="tokens generated per run (2 segments of 128: two memory writes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quantized", default="int8-dynamic,int8-qdq", help="quantization methods to add as contenders ('' for none)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.presets.split(","):
            pkg = export_preset(name, tmp / f"{name}.memx", verify_segments=0)
            s = pkg.manifest.decode.capacity
            rt = runtimes.open(pkg, backend="onnxruntime")
            quantized = {m: runtimes.open(quantize_package(pkg, tmp / f"{name}.{m}.memx", method=m, calib_segments=16, calib_horizon=16, progress=False).package,
                                          backend="onnxruntime") for m in filter(None, args.quantized.split(","))}
            model = build_preset(name).eval()
            for b in (int(x) for x in args.batches.split(",")):
                prompt = np.random.default_rng(0).integers(0, pkg.manifest.vocab_size, size=(b, s), dtype=np.int64)
                n = args.tokens
                timings = {
                    "memx decode (ORT)": [bench_memx(rt, prompt, n, s) for _ in range(args.repeats)],
                    "memx-run (C++)": [t for t in (bench_memx_run(pkg.path, prompt, n, s, tmp) for _ in range(args.repeats)) if t is not None],
                    "step rerun (ORT)": [bench_step_rerun(rt, prompt, min(n, s), s) * n / min(n, s) for _ in range(1)],
                    "torch eager (decode fns)": [bench_torch(model, prompt, n, s) for _ in range(args.repeats)],
                    **{f"memx decode {m} (ORT)": [bench_memx(q, prompt, n, s) for _ in range(args.repeats)] for m, q in quantized.items()},
                }
                for contender, secs in timings.items():
                    if secs:
                        rows.append({"preset": name, "B": b, "S": s, "contender": contender, "tokens_per_s": b * n / statistics.median(secs)})
                print(f"{name} B={b}: " + ", ".join(f"{r['contender']} {r['tokens_per_s']:.0f}" for r in rows if r['preset'] == name and r['B'] == b), flush=True)
    print("\n| preset | B | S | contender | tokens/s (median) | vs step rerun | vs torch eager |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = {x["contender"]: x["tokens_per_s"] for x in rows if x["preset"] == r["preset"] and x["B"] == r["B"]}
        print(f"| {r['preset']} | {r['B']} | {r['S']} | {r['contender']} | {r['tokens_per_s']:,.0f} | "
              f"{r['tokens_per_s'] / same['step rerun (ORT)']:.1f}× | {r['tokens_per_s'] / same['torch eager (decode fns)']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
