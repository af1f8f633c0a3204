#!/usr/bin/env python
"""A user's Hugging Face model as an RMT decoder (memx.models.hf.rmt_decoder around a GPT-2
built from a config): per-segment latency of eager Hugging Face PyTorch (the cell called
directly, memory fed back by hand: what the user runs without memx) vs the memx package on
ONNX Runtime in fp32 and int8-dynamic (Stream.step), B=1 and B=8, S=128, side by side in one
run; medians of rounds that alternate between the contenders.

    python benchmarks/byom_latency.py
    python benchmarks/byom_latency.py --layers 2 --width 128 --steps 10 --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from memx import runtimes
from memx.calibration import quantize_package
from memx.exporter import export
from memx.models import hf
from memx.profiling.stats import machine


def build(layers: int, width: int, vocab: int, slots: int, segment: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=segment + 2 * slots + 8, n_embd=width, n_layer=layers, n_head=max(1, width // 64),
                                    bos_token_id=0, eos_token_id=0))
    return hf.rmt_decoder(lm, memory_slots=slots, max_segment_len=segment)


def eager_step(step, batch: int) -> Callable[[np.ndarray], None]:
    """The cell itself in PyTorch, memory carried by hand (inference mode, full segments)."""
    memory = [step.init_memory.detach().expand(batch, -1, -1).clone()]
    mask = torch.ones(batch, step.max_segment_len, dtype=torch.int64)

    def run(tokens: np.ndarray) -> None:
        with torch.inference_mode():
            out = step.inner(torch.from_numpy(tokens), memory=memory[0], attention_mask=mask)
        memory[0] = out["memory"]

    return run


def memx_step(pkg, batch: int, threads: int) -> Callable[[np.ndarray], None]:
    stream = runtimes.open(pkg, backend="onnxruntime", intra_op_threads=threads).stream(batch)
    return lambda tokens: stream.step(tokens)


def time_steps(run: Callable[[np.ndarray], None], segments: list[np.ndarray]) -> float:
    run(segments[0])  # warm
    t0 = time.perf_counter()
    for tokens in segments:
        run(tokens)
    return (time.perf_counter() - t0) / len(segments) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--segment", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and ONNX Runtime alike")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    step = build(args.layers, args.width, args.vocab, args.slots, args.segment)
    work = Path(tempfile.mkdtemp(prefix="memx-byom-"))
    fp32 = export(step, work / "fp32", verify_segments=0)
    int8 = quantize_package(fp32, work / "int8", method="int8-dynamic", progress=False).package
    rng = np.random.default_rng(0)
    print(f"# RMT decoder around GPT-2 ({args.layers} layers, width {args.width}, vocab {args.vocab}, {args.slots} memory slots), S={args.segment} — "
          f"{machine()['cpu']}, {args.threads} thread(s), medians of {args.rounds} rounds x {args.steps} segments")
    print("| B | eager HF PyTorch (ms) | memx ORT fp32 (ms) | memx ORT int8-dynamic (ms) | fp32 vs eager | int8 vs eager |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        segments = [rng.integers(0, args.vocab, size=(batch, args.segment), dtype=np.int64) for _ in range(args.steps)]
        contenders = {"eager": eager_step(step, batch), "fp32": memx_step(fp32, batch, args.threads), "int8": memx_step(int8, batch, args.threads)}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                times[name].append(time_steps(run, segments))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {batch} | {med['eager']:.2f} | {med['fp32']:.2f} | {med['int8']:.2f} | {med['eager'] / med['fp32']:.2f}x | {med['eager'] / med['int8']:.2f}x |")


if __name__ == "__main__":
    main()
