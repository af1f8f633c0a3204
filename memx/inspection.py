"""Facts about a package for `memx inspect`: states, graphs, ops, precision, size, what runs its
custom ops (TensorRT: the facts memx doctor uses), the TensorRT engines memx build added."""

from __future__ import annotations

from collections import Counter
from typing import Any

import onnx

from memx.package.files import Package

STANDARD_DOMAINS = ("", "ai.onnx")
OPS_DOMAIN = "memx"  # memx custom ops carry a local function (their reference body) and are still custom ops


def op_histogram(model: onnx.ModelProto) -> tuple[Counter, list[dict[str, Any]]]:
    """Op types used by the graph (functions included) and the non-standard (custom) ones."""
    ops: Counter = Counter()
    custom: dict[tuple[str, str], int] = {}
    local = {(f.domain, f.name) for f in model.functions}
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    for node in nodes:
        key = f"{node.domain}::{node.op_type}" if node.domain not in STANDARD_DOMAINS else node.op_type
        ops[key] += 1
        if node.domain not in STANDARD_DOMAINS and ((node.domain, node.op_type) not in local or node.domain == OPS_DOMAIN):
            custom[(node.domain, node.op_type)] = custom.get((node.domain, node.op_type), 0) + 1
    custom_list = [{"domain": d, "op": o, "count": c} for (d, o), c in sorted(custom.items())]
    return ops, custom_list


def _graph_facts(pkg: Package, g: Any) -> dict[str, Any]:
    proto = onnx.load(str(pkg.file(g.file)), load_external_data=False)
    ops, custom = op_histogram(proto)
    return {
        "name": g.name, "file": g.file, "role": g.role, "consumes": dict(g.consumes),
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "nodes": sum(ops.values()), "ops": dict(ops.most_common()), "custom_ops": custom,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": t.shape} for t in g.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": t.shape} for t in g.outputs],
    }


def _decode_facts(pkg: Package) -> dict[str, Any] | None:
    """The decode graphs (generation token by token) and the cache each stream holds for them."""
    d = pkg.manifest.decode
    if d is None:
        return None
    import numpy as np

    nbytes = sum(int(np.prod([int(x) for x in c.shape[1:]], dtype=np.int64)) * np.dtype(c.dtype).itemsize for c in d.cache)
    return {"capacity": d.capacity, "graphs": [_graph_facts(pkg, g) for g in d.graphs], "cache_bytes_per_stream": nbytes,
            "cache": [{"name": c.name, "shape": c.shape, "dtype": c.dtype, "written_by": c.graph} for c in d.cache]}


def describe_package(pkg: Package) -> dict[str, Any]:
    m = pkg.manifest
    graphs = [_graph_facts(pkg, g) for g in m.graphs]
    state_bytes = state_bytes_per_stream(m)
    return {
        "path": str(pkg.path),
        "format_version": m.format_version,
        "family": m.family,
        "preset": m.preset,
        "config": m.config,
        "precision": m.precision,
        "vocab_size": m.vocab_size,
        "segment": m.segment,
        "state": [{"name": s.name, "shape": s.shape, "dtype": s.dtype, "precision": s.precision, "input": s.input, "output": s.output} for s in m.state],
        "state_bytes_per_stream": state_bytes,
        "outputs": [{"name": o.name, "shape": o.shape, "dtype": o.dtype} for o in m.outputs],
        "graphs": graphs,
        "custom_ops": m.custom_ops,
        "custom_op_kernels": custom_op_kernels(m.custom_ops),
        "files": {k: v.bytes for k, v in m.files.items()},
        "size_bytes": pkg.size_bytes(),
        "model_id": m.model_id(),
        "provenance": m.provenance,
        "validation": m.validation,
        "quantization": _quantization(pkg),
        "decode": _decode_facts(pkg),
        "engines": engine_facts(pkg),
        "onnxruntime_cpu": m.onnxruntime_cpu,
    }


def engine_facts(pkg: Package) -> list[dict[str, Any]]:
    """The TensorRT engines `memx build` added (memx.json ``engines``): each one's build tags and
    file size; an entry memx cannot read (memx.json edited by hand) is listed as such."""
    from memx.errors import ManifestError
    from memx.tensorrt.tags import BuildTags

    engines = []
    for raw in pkg.manifest.engines:
        try:
            tags = BuildTags.from_dict(raw)
        except ManifestError as e:
            engines.append({"graph": raw.get("graph") if isinstance(raw, dict) else None, "unreadable": e.message})
            continue
        listed = pkg.manifest.files.get(tags.file)
        engines.append({**tags.to_dict(), "bytes": listed.bytes if listed is not None else None})
    return engines


def _quantization(pkg: Package) -> dict[str, Any] | None:
    """The quantization record with what the graphs actually hold (Q/DQ, casts, memory path)."""
    q = pkg.manifest.quantization
    if q is None:
        return None
    from memx.calibration.inspect import precision_facts

    facts = precision_facts(pkg)
    return {"method": q["method"], "policy": q["policy"], "calibration": q.get("calibration"), "warnings": q.get("warnings", []),
            "memory_path_intact": facts["memory_path_intact"],
            "graphs": facts["graphs"]}


def custom_op_kernels(used: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each custom op a package uses: what each backend would run for it here."""
    from memx.ops.library import library_status
    from memx.tensorrt.plugin import installed_plugin_facts
    from memx.tensorrt.versions import installed_flavour

    path, why = library_status()
    flavour = installed_flavour() if used else None
    result = []
    for op in used:
        trt = installed_plugin_facts(op["op"], flavour)  # what memx doctor and memx build --plugin auto go by
        result.append({
            "domain": op["domain"], "op": op["op"], "version": op["version"],
            "backends": {
                "onnxruntime": f"C++ kernel ({path})" if path else f"reference body (model-local function); no kernel: {why}",
                "torch": "blocked PyTorch reference (memx.ops.local_global_attention)",
                "tensorrt": trt.describe(),
            },
            "tensorrt": trt.to_dict(),
        })
    return result


def state_bytes_per_stream(m: Any) -> int:
    """Bytes of one stream's state (every state tensor of the manifest, batch axis excluded)."""
    return sum(_numel(s.shape[1:]) * _itemsize(s.dtype) for s in m.state)


def _numel(shape: list[int | str]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}[dtype]


def zoo_catalogue() -> dict[str, Any]:
    """What ``memx zoo`` lists: the families, every preset (built once with its default seed to
    count its parameters) and the trained zoo models."""
    import math

    from memx.models import build_preset, families, presets
    from memx.models.zoo import zoo_entries

    rows = []
    for p in presets():
        model = build_preset(p.name)
        specs = model.state_specs()
        rows.append({"preset": p.name, "family": p.family, "size": p.size, "parameters": model.num_parameters(),
                     "state": {s.name: list(s.shape) for s in specs},
                     "state_bytes": sum(math.prod(s.shape) * _itemsize(s.dtype) for s in specs),
                     "max_segment_len": model.max_segment_len, "description": p.description})
    from memx.models.zoo import measured_table

    items = measured_table()["items"]
    trained = [{"name": e.name, "family": e.family, "task": e.task, "segment_len": e.segment_len, "metric": e.metric, "chance": e.chance,
                "accuracy": (e.measured() or {}).get("onnxruntime"), "measured": e.measured(), "held_out_items": items,
                "checkpoint": str(e.checkpoint), "available": e.checkpoint.is_file(), "description": e.description}
               for e in zoo_entries()]
    return {"families": sorted(families()), "presets": rows, "zoo": trained}
