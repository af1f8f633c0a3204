"""``memx quantize``: a new package from an fp32 one, with a method and a precision policy.

The fp32 package is left untouched; the quantized package is written through a staging
directory (nothing half-written on failure), records the method, the calibration and the
policy in its manifest, and keeps the fp32 reference weights so it can be compared with
PyTorch (``memx validate DIR --against torch``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from memx.calibration.decode import StepPrecision, decode_memory_path, memory_io, record_decode_feeds, shared_ranges
from memx.calibration.feeds import CalibrationSet, collect_feeds
from memx.validation.sources import TokenSource, default_source
from memx.calibration.methods import GraphJob, get_method
from memx.calibration.policy import PrecisionPolicy, fold_constant_weights, name_nodes, unshare_initializers
from memx.onnxgraph import MemoryPath, find_memory_path
from memx.errors import QuantizationError
from memx.package.manifest import GraphInfo, Manifest
from memx.package.files import Package, check_target, file_info, mirror_manifest, staged_directory, write_text_atomic

log = logging.getLogger("memx.calibration")

ROUNDED_SUFFIX = ".memx_unrounded"
CALIBRATION_DIR = "calibration"


@dataclass
class QuantizeResult:
    package: Package
    calibration: CalibrationSet | None
    warnings: list[str]
    memory_paths: dict[str, MemoryPath]


def state_scales(pkg: Package, calib: CalibrationSet) -> dict[str, float]:
    """Symmetric int8 scale of each state output: absmax over the recorded steps' outputs."""
    from memx import runtimes

    rt = runtimes.open(pkg, backend="onnxruntime")
    m = pkg.manifest
    absmax = {s.name: 0.0 for s in m.state}
    for graph in m.graphs:
        outs = {s.name: s.output for s in m.state if s.graph == graph.name}
        if not outs:
            continue
        for feeds in calib.feeds[graph.name]:
            result = rt.backend.run(graph, feeds)
            for name, out in outs.items():
                absmax[name] = max(absmax[name], float(np.abs(result[out]).max()))
    return {k: max(v, 1e-8) / 127.0 for k, v in absmax.items()}


def round_state_outputs(model: onnx.ModelProto, outputs: dict[str, str], precision: str, scales: dict[str, float] | None = None) -> None:
    """Round each state output (graph output name -> state name) to ``precision`` every step:
    fp16 by a Cast pair, int8 by a symmetric QuantizeLinear/DequantizeLinear pair. The
    output stays a float32 tensor of the same name."""
    if precision == "fp32" or not outputs:
        return
    for out_name, state in outputs.items():
        raw = out_name + ROUNDED_SUFFIX
        for node in model.graph.node:
            node.output[:] = [raw if o == out_name else o for o in node.output]
        if precision == "fp16":
            nodes = [helper.make_node("Cast", [raw], [raw + ".fp16"], to=TensorProto.FLOAT16, name=f"memx_state_fp16_{state}"),
                     helper.make_node("Cast", [raw + ".fp16"], [out_name], to=TensorProto.FLOAT, name=f"memx_state_fp32_{state}")]
        elif precision == "int8":
            if not scales or state not in scales:
                raise QuantizationError(f"no int8 scale for state {state!r}", expected="a calibrated scale", actual="none")
            scale, zero = f"memx_state_scale_{state}", f"memx_state_zero_{state}"
            model.graph.initializer.extend([numpy_helper.from_array(np.array(scales[state], dtype=np.float32), scale),
                                            numpy_helper.from_array(np.array(0, dtype=np.int8), zero)])
            nodes = [helper.make_node("QuantizeLinear", [raw, scale, zero], [raw + ".int8"], name=f"memx_state_q_{state}"),
                     helper.make_node("DequantizeLinear", [raw + ".int8", scale, zero], [out_name], name=f"memx_state_dq_{state}")]
        else:
            raise QuantizationError("unknown state precision", expected=["fp32", "fp16", "int8"], actual=precision)
        model.graph.node.extend(nodes)


def quantize_package(
    package: str | os.PathLike | Package,
    out_dir: str | os.PathLike,
    *,
    method: str = "int8-qdq",
    source: TokenSource | None = None,
    calib_segments: int = 128,
    calib_horizon: int | None = None,
    calib_streams: int = 8,
    calib_mode: str = "rollout",
    calibration: str = "minmax",
    state_precision: str = "fp32",
    attention_qdq: bool = False,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize ``package`` into ``out_dir`` (see module doc). ``source`` defaults to the
    package's task, else random tokens (with a warning in the result). ``attention_qdq``
    also quantizes the activation-by-activation MatMuls (attention scores) in int8-qdq."""
    pkg = package if isinstance(package, Package) else Package.open(package)
    m = pkg.manifest
    if m.precision != "fp32":
        raise QuantizationError("only fp32 packages can be quantized", expected="precision fp32", actual=m.precision, hint="quantize the fp32 package it came from")
    if Path(out_dir).resolve() == pkg.path.resolve():
        raise QuantizationError("the quantized package must not replace its source", expected="a different --out", actual=str(out_dir))
    check_target(out_dir, force=force)  # before calibration: --force replaces only a memx package
    quant = get_method(method)
    policy = PrecisionPolicy(state_precision)
    warnings: list[str] = []
    calib = None
    if source is not None and not (quant.needs_calibration or policy.state == "int8"):
        warnings.append(f"calibration data not used: {method} with state precision {policy.state} needs no calibration")
    if quant.needs_calibration or policy.state == "int8":
        if source is None:
            source, warning = default_source(pkg, m.segment["max"])
            if warning:
                warnings.append(warning)
                log.warning(warning)
        calib = collect_feeds(pkg, source, segments=calib_segments, horizon=calib_horizon, streams=calib_streams, mode=calib_mode, seed=seed, progress=progress)
    scales = state_scales(pkg, calib) if policy.state == "int8" and calib is not None else None
    paths: dict[str, MemoryPath] = {}
    records: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memx-quantize-") as tmp, staged_directory(out_dir, force=force) as stage:
        for rel in m.files:
            if rel not in {g.file for g in m.graphs + (m.decode.graphs if m.decode else [])} and not rel.startswith(("engines/", "onnxruntime-cpu/")):  # builds of the old graphs do not carry over
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pkg.file(rel), target)
        step = StepPrecision()
        options: dict[str, Any]
        caches: dict[str, Path] = {}
        for graph in m.graphs:
            proto = _prepared(pkg, graph)
            path = find_memory_path(proto, *memory_io(m, graph))
            step.add(graph.name, proto, path)
            paths[graph.name] = path
            feeds = calib.feeds[graph.name] if calib else []
            options = {"attention_qdq": attention_qdq}
            if m.decode is not None:  # one range per weight's use on the tokens, which the decode graph then takes
                options["range_groups"] = step.range_groups(graph.name)
            records[graph.name] = _quantize_graph(quant, policy, calibration, graph, proto, path, feeds, options, Path(tmp), stage, caches)
            result = onnx.load(str(stage / graph.file))
            outputs = {t.name for t in graph.outputs}
            round_state_outputs(result, {s.output: s.name for s in m.state if s.output in outputs}, policy.state, scales)
            onnx.save(result, str(stage / graph.file))
        if m.decode is not None:  # as the step was, weight by weight (memx.calibration.decode)
            decode_feeds = record_decode_feeds(pkg, calib) if calib else {}
            for graph in m.decode.graphs:
                proto = _prepared(pkg, graph)
                path = paths[graph.name] = decode_memory_path(proto, m, graph, step)
                options = {"attention_qdq": attention_qdq}
                shared = None
                if quant.needs_calibration:
                    options["range_overrides"], matched, total, copies = shared_ranges(proto, m, graph, step, caches)
                    shared = {"activation_ranges_from_step": matched, "weighted_matmuls": total, "input_copies": copies}
                record = _quantize_graph(quant, policy, calibration, graph, proto, path, decode_feeds.get(graph.name, []), options, Path(tmp), stage, caches)
                records[graph.name] = {**record, "float_because_step_keeps_weight": len(path.shared_nodes), **({"shared_with_step": shared} if shared else {})}
        new = _quantized_manifest(m, quant.precision, method, policy, calib, calibration, records, warnings, scales)
        for graph in new.graphs + (new.decode.graphs if new.decode else []):
            mirror_manifest(stage / graph.file, onnx.load(str(stage / graph.file)), new)
        new.files = {p.relative_to(stage).as_posix(): file_info(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        write_text_atomic(stage / "memx.json", new.to_json())
        _smoke_test(stage)
    return QuantizeResult(Package.open(out_dir), calib, warnings, paths)


def _prepared(pkg: Package, graph: GraphInfo) -> onnx.ModelProto:
    """The fp32 graph as the quantizers want it: weights folded to constants, every node named."""
    proto = onnx.load(str(pkg.file(graph.file)))
    fold_constant_weights(proto)
    name_nodes(proto)
    return proto


def _quantize_graph(quant: Any, policy: PrecisionPolicy, calibration: str, graph: GraphInfo, proto: onnx.ModelProto, path: MemoryPath,
                    feeds: list[dict[str, np.ndarray]], options: dict[str, Any], tmp: Path, stage: Path, caches: dict[str, Path]) -> dict[str, Any]:
    """Quantize one graph into ``stage / graph.file``; returns its manifest record (ONNX Runtime's
    calibration cache, when the method makes one, is kept in the package and in ``caches``)."""
    if policy.protects_memory_path:
        unshare_initializers(proto, path.protected_nodes)
    named = tmp / f"{graph.name}.fp32.onnx"
    onnx.save(proto, str(named))
    job = GraphJob(graph, named, tmp / f"{graph.name}.q.onnx", feeds, path, policy, calibration, options=options)
    record = quant.quantize(job)
    cache = record.pop("calibration_cache", None)
    if cache:  # ONNX Runtime's calibration cache: re-quantize without re-running calibration
        caches[graph.name] = Path(cache)
        (stage / CALIBRATION_DIR).mkdir(exist_ok=True)
        shutil.copy2(cache, stage / CALIBRATION_DIR / f"{graph.name}.json")
        record["calibration_cache"] = f"{CALIBRATION_DIR}/{graph.name}.json"
    shutil.copy2(job.target, stage / graph.file)
    return {**record, "memory_path": path.to_dict()}


def _quantized_manifest(m: Manifest, precision: str, method: str, policy: PrecisionPolicy, calib: CalibrationSet | None, calibration: str,
                        records: dict[str, Any], warnings: list[str], scales: dict[str, float] | None) -> Manifest:
    new = Manifest.from_dict(m.to_dict())
    new.engines = []  # built from the fp32 graphs: `memx build` the quantized package anew
    new.onnxruntime_cpu = None
    new.precision = precision
    for s in new.state:
        if s.dtype.startswith(("float", "bfloat")):  # bool and integer states are carried as they are
            s.precision = policy.state
    new.validation = None
    new.quantization = {
        "method": method,
        "policy": {"state_precision": policy.state, "memory_path": "excluded" if policy.protects_memory_path else "quantized", "description": policy.describe(),
                   "state_scales": scales},
        "calibration": ({**calib.describe(), "method": calibration} if calib else None),
        "graphs": records,
        "source": {"precision": m.precision, "weights_sha256": m.provenance.get("weights_sha256")},
        "warnings": warnings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return new


def _smoke_test(stage: Path, segments: int = 4) -> None:
    """The quantized package must load and step with finite state before it is written."""
    from memx import runtimes

    try:
        rt = runtimes.open(stage, backend="onnxruntime")
        m = rt.manifest
        stream = rt.stream(2)
        rng = np.random.default_rng(0)
        for _ in range(segments):
            stream.step(rng.integers(0, m.vocab_size, size=(2, m.segment["max"])), **m.sample_inputs(rng, 2, m.segment["max"]))
    except Exception as e:
        raise QuantizationError(f"the quantized package does not run in ONNX Runtime: {type(e).__name__}: {e}") from e
