#!/usr/bin/env python
"""Serving throughput: N concurrent streams through a local tritonserver (memx's Python
backend, gRPC on loopback) vs the in-process StreamPool on the same package, one run, side by
side. Each round every stream steps one segment; the table shows segments/s and the p50/p99
of a round, and each Triton way's throughput as a share of the in-process one. Target (issue
18): >= 90% at 64 sequences on this CPU.

Two ways through Triton:
- "N clients": N sequences of one row each, one request per sequence and round (gRPC aio, all
  in flight together), as N independent clients would send them; the server batches them.
- "stream(N)": memx.serving.connect(...).stream(N), one sequence carrying N rows, one request
  per round, as one client stepping a batch (like a local Stream(N)) sends it; its outputs
  over the wire ("wire") or through a shared-memory region ("shm", the default on one host).

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
        t = rng.integers(0, vocab, (1, 1, seg)).astype(np.int64)  # Triton batch 1, one row, S tokens
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


def one_stream(url: str, name: str, vocab: int, n: int, rounds: int, seg: int, shared_memory: bool) -> list[float]:
    from memx import serving

    stream = serving.connect(url, name, shared_memory=shared_memory).stream(n)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(rounds):
        t = rng.integers(0, vocab, (n, seg))
        t0 = time.perf_counter()
        stream.step(t)
        times.append(time.perf_counter() - t0)
    stream.close()
    return times[1:]  # the first round opens the sequence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="rmt-tiny")
    ap.add_argument("--sequences", default="1,8,64,256")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--segment-len", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--queue-delay-us", type=int, default=RepositoryOptions.queue_delay_us, help="the sequence batcher's max_queue_delay_microseconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_preset(args.preset, Path(tmp) / "pkg.memx", verify_segments=0)
        write_repository(pkg, Path(tmp) / "repo", RepositoryOptions(name="m", max_batch=args.max_batch, max_candidates=max(256, args.max_batch),
                                                                  queue_delay_us=args.queue_delay_us))
        rows = []
        with TritonServer(Path(tmp) / "repo") as server:
            for n in (int(s) for s in args.sequences.split(",")):
                local = in_process(pkg, n, args.rounds, args.segment_len)
                clients = asyncio.run(through_triton(server.grpc_url, "m", pkg.manifest.vocab_size, n, args.rounds + 1, args.segment_len))
                wire = one_stream(server.grpc_url, "m", pkg.manifest.vocab_size, n, args.rounds + 1, args.segment_len, shared_memory=False)
                shm = one_stream(server.grpc_url, "m", pkg.manifest.vocab_size, n, args.rounds + 1, args.segment_len, shared_memory=True)
                rows.append((n, {"in-process": local, "Triton, N clients": clients, "Triton, stream(N), wire": wire, "Triton, stream(N), shm": shm}))
    print(f"{args.preset}, segment length {args.segment_len}, {args.rounds} rounds, max batch {args.max_batch}, queue delay {args.queue_delay_us} us; {machine()}")
    labels = list(rows[0][1])
    print("| streams | " + " | ".join(f"{label} seg/s (p50 / p99 ms)" for label in labels) + " |")
    print("|---:|" + "---:|" * len(labels))
    for n, ways in rows:
        base = n / statistics.median(ways["in-process"])
        cells = []
        for label, times in ways.items():
            rate = n / statistics.median(times)
            ratio = "" if label == "in-process" else f" **{rate / base:.0%}**"
            cells.append(f"{rate:.0f} ({percentile(times, 50) * 1e3:.2f} / {percentile(times, 99) * 1e3:.2f}){ratio}")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
