#!/usr/bin/env python
"""Serving throughput: N concurrent sequences through a local tritonserver (memx's Python
backend, gRPC on loopback) vs the in-process StreamPool on the same package, one run, side by
side. Each round every sequence steps one segment; the table shows segments/s and the p50/p99
of a round, and Triton's throughput as a share of the in-process one. Target (issue 18): >= 90%
at 64 sequences on this CPU.

    python benchmarks/serving.py
    python benchmarks/serving.py --preset rmt-tiny --sequences 1,8,64 --rounds 30 --segment-len 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memx import runtimes
from memx.exporter import Package, export_preset
from memx.profiling.stats import machine
from memx.serving.launcher import TritonServer
from memx.serving.repository import RepositoryOptions, write_repository


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def in_process(pkg: Package, n: int, rounds: int, seg: int) -> list[float]:
    pool = runtimes.open(pkg).pool(min(n, 64))
    ids = [pool.open() for _ in range(n)]
    rng = np.random.default_rng(0)
    times = []
    for _ in range(rounds):
        batch = {sid: rng.integers(0, pkg.manifest.vocab_size, seg) for sid in ids}
        t0 = time.perf_counter()
        pool.step(batch)
        times.append(time.perf_counter() - t0)
    return times


async def through_triton(url: str, name: str, vocab: int, n: int, rounds: int, seg: int) -> list[float]:
    import tritonclient.grpc.aio as grpc

    client = grpc.InferenceServerClient(url)
    rng = np.random.default_rng(0)
    ids = list(range(1, n + 1))

    async def one(sid: int, first: bool, last: bool) -> None:
        t = rng.integers(0, vocab, (1, seg)).astype(np.int64)
        x = grpc.InferInput("TOKENS", list(t.shape), "INT64")
        x.set_data_from_numpy(t)
        await client.infer(name, [x], outputs=[grpc.InferRequestedOutput("logits")], sequence_id=sid, sequence_start=first, sequence_end=last)

    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        await asyncio.gather(*(one(sid, r == 0, r == rounds - 1) for sid in ids))
        times.append(time.perf_counter() - t0)
    await client.close()
    return times[1:]  # the first round opens the sequences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="rmt-tiny")
    ap.add_argument("--sequences", default="1,8,64,256")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--segment-len", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_preset(args.preset, Path(tmp) / "pkg.memx", verify_segments=0)
        write_repository(pkg, Path(tmp) / "repo", RepositoryOptions(name="m", max_batch=args.max_batch, max_candidates=max(256, args.max_batch)))
        rows = []
        with TritonServer(Path(tmp) / "repo") as server:
            for n in (int(s) for s in args.sequences.split(",")):
                local = in_process(pkg, n, args.rounds, args.segment_len)
                served = asyncio.run(through_triton(server.grpc_url, "m", pkg.manifest.vocab_size, n, args.rounds + 1, args.segment_len))
                rows.append((n, local, served))
    print(f"{args.preset}, segment length {args.segment_len}, {args.rounds} rounds, max batch {args.max_batch}; {machine()}")
    print(f"{'sequences':>9} | {'in-process seg/s':>16} {'p50 ms':>8} {'p99 ms':>8} | {'Triton seg/s':>12} {'p50 ms':>8} {'p99 ms':>8} | {'Triton/in-process':>17}")
    for n, local, served in rows:
        a, b = n / statistics.median(local), n / statistics.median(served)
        print(f"{n:>9} | {a:>16.0f} {percentile(local, 50) * 1e3:>8.2f} {percentile(local, 99) * 1e3:>8.2f} | "
              f"{b:>12.0f} {percentile(served, 50) * 1e3:>8.2f} {percentile(served, 99) * 1e3:>8.2f} | {b / a:>16.0%}")


if __name__ == "__main__":
    main()
