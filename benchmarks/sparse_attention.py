#!/usr/bin/env python
"""memx.LocalGlobalAttention in ONNX Runtime (CPU): the C++ kernel (libmemx_ops) vs. the op's
reference body (the blocked decomposition ORT inlines) vs. dense masked attention
(MatMul + additive band/global mask + Softmax + MatMul, the S x S graph users write by hand).

One process per (contender, L) so each peak RSS is its own; same random inputs everywhere.
Defaults: B = 1, 8 heads of 64 (d = 512), band window 128, M = 32 memory slots.

    python benchmarks/sparse_attention.py
    python benchmarks/sparse_attention.py --lengths 1024,4096 --repeats 5 --dense-max 8192
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _bench import current_rss_mb, peak_rss_mb, run_worker

CONTENDERS = ("kernel", "body", "dense")


def _inputs(length: int, heads: int, dim: int, memory: int):
    import numpy as np

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, heads, length, dim), dtype=np.float32) for _ in range(3))
    mk, mv = (rng.standard_normal((1, heads, memory, dim), dtype=np.float32) for _ in range(2))
    return {"q": q, "k": k, "v": v, "lengths": np.array([length], dtype=np.int64), "mem_k": mk, "mem_v": mv}


def _custom_op_model(window: int, dim: int) -> bytes:
    from onnx import TensorProto, helper

    from memx.ops.lga_op import OP_NAME, reference_body, register_onnx_schema

    register_onnx_schema()
    names = ["q", "k", "v", "lengths", "mem_k", "mem_v"]
    node = helper.make_node(OP_NAME, names, ["out"], domain="memx", pattern="band", window=window, causal=0, plugin_namespace="memx", plugin_version="1")
    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info(n, f, [1, "H", "S", dim]) for n in ("q", "k", "v")]
    ins += [helper.make_tensor_value_info("lengths", TensorProto.INT64, [1])]
    ins += [helper.make_tensor_value_info(n, f, [1, "H", "M", dim]) for n in ("mem_k", "mem_v")]
    graph = helper.make_graph([node], "lga", ins, [helper.make_tensor_value_info("out", f, [1, "H", "S", dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("memx", 1)], functions=[reference_body(node, head_dim=dim)])
    model.ir_version = 10
    return model.SerializeToString()


def _dense_model(dim: int) -> bytes:
    """softmax(q [mem_k; k]^T / sqrt(dh) + bias) [mem_v; v], bias (1, 1, S, M+S) additive mask."""
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Concat", ["mem_k", "k"], ["keys"], axis=2),
        helper.make_node("Concat", ["mem_v", "v"], ["values"], axis=2),
        helper.make_node("Transpose", ["keys"], ["keys_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "keys_t"], ["raw"]),
        helper.make_node("Constant", [], ["scale"], value=helper.make_tensor("s", f, [], [1.0 / dim**0.5])),
        helper.make_node("Mul", ["raw", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "values"], ["out"]),
    ]
    ins = [helper.make_tensor_value_info(n, f, [1, "H", "S", dim]) for n in ("q", "k", "v")]
    ins += [helper.make_tensor_value_info(n, f, [1, "H", "M", dim]) for n in ("mem_k", "mem_v")]
    ins += [helper.make_tensor_value_info("bias", f, [1, 1, "S", "T"])]
    graph = helper.make_graph(nodes, "dense", ins, [helper.make_tensor_value_info("out", f, [1, "H", "S", dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model.SerializeToString()


def _band_bias(length: int, memory: int, window: int):
    import numpy as np

    i = np.arange(length)[:, None]
    near = np.abs(i - np.arange(length)[None, :]) <= window
    bias = np.where(near, 0.0, -30000.0).astype(np.float32)
    return np.concatenate([np.zeros((length, memory), np.float32), bias], axis=1)[None, None]  # (1, 1, S, M+S)


def worker(contender: str, length: int, repeats: int, window: int, memory: int, heads: int, dim: int, threads: int) -> dict:
    import onnxruntime as ort

    from memx.ops.library import find_library

    feeds = _inputs(length, heads, dim, memory)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if contender == "dense":
        model = _dense_model(dim)
        feeds = {k: v for k, v in feeds.items() if k != "lengths"}
        feeds["bias"] = _band_bias(length, memory, window)
    else:
        model = _custom_op_model(window, dim)
        if contender == "kernel":
            lib = find_library()
            if lib is None:
                raise SystemExit("libmemx_ops is not built: run `make ops`")
            so.register_custom_ops_library(str(lib))
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    before = current_rss_mb()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    times = sorted(times[1:])
    return {"contender": contender, "L": length, "median_ms": times[len(times) // 2], "extra_mb": peak_rss_mb() - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--memory", type=int, default=32)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    ap.add_argument("--dense-max", type=int, default=8192, help="skip dense above this L (it needs ~3 x H x L^2 x 4 bytes)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--worker", nargs=2, metavar=("CONTENDER", "L"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    common = ["--repeats", str(a.repeats), "--window", str(a.window), "--memory", str(a.memory), "--heads", str(a.heads),
              "--head-dim", str(a.head_dim), "--threads", str(a.threads)]
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.repeats, a.window, a.memory, a.heads, a.head_dim, a.threads)))
        return
    rows = []
    for length in (int(x) for x in a.lengths.split(",")):
        row = {}
        for c in CONTENDERS:
            if c == "dense" and length > a.dense_max:
                row[c] = None
                continue
            row[c] = run_worker(__file__, [c, str(length), *common])
        rows.append(row)
        print(f"L={length} done", file=sys.stderr)
    print(f"\nmemx.LocalGlobalAttention, ONNX Runtime CPU: B=1, {a.heads} heads x {a.head_dim}, band window {a.window}, "
          f"M={a.memory}; median of {a.repeats}; MiB = peak RSS during the runs above the RSS before them")
    head = (f"{'L':>6} {'kernel ms':>10} {'body ms':>9} {'dense ms':>9} {'dense/kernel':>13} {'body/kernel':>12} "
            f"{'kernel MiB':>11} {'body MiB':>9} {'dense MiB':>10} {'dense/kernel mem':>17}")
    print(head)
    print("-" * len(head))
    for r in rows:
        k, b, d = r["kernel"], r["body"], r["dense"]
        dense_ms = f"{d['median_ms']:>9.1f}" if d else f"{'skipped':>9}"
        dense_mb = f"{d['extra_mb']:>10.0f}" if d else f"{'-':>10}"
        speed = f"{d['median_ms'] / k['median_ms']:>12.2f}x" if d else f"{'-':>13}"
        mem = f"{d['extra_mb'] / max(k['extra_mb'], 1):>16.1f}x" if d else f"{'-':>17}"
        print(f"{k['L']:>6} {k['median_ms']:>10.1f} {b['median_ms']:>9.1f} {dense_ms} {speed} {b['median_ms'] / k['median_ms']:>11.2f}x "
              f"{k['extra_mb']:>11.0f} {b['extra_mb']:>9.0f} {dense_mb} {mem}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
