"""Export a segment step to a memx package (DESIGN.md §3) with torch.onnx (dynamo)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from safetensors.torch import save_file
from torch.export import Dim

import memx
from memx.errors import ContractError, ExportError
from memx.package.manifest import (
    CacheInfo,
    DecodeInfo,
    GraphInfo,
    InputInfo,
    Manifest,
    OutputInfo,
    StateInfo,
    TensorInfo,
)
from memx.package.files import Package, check_target, file_info, mirror_manifest, staged_directory, write_text_atomic
from memx.exporter.contract import check_behaviour, check_declared_io, check_symbolic_axes
from memx.exporter.step import example_inputs, state_input_name, state_output_name
from memx.models.base import SegmentModel
from memx.models.decode import DECODE, OPEN, DecodeGraph
from memx.models.checkpoint import load_checkpoint
from memx.models.zoo import named_configs
from memx.ops.registry import DOMAIN as OPS_DOMAIN
from memx.ops.registry import DOMAIN_VERSION as OPS_VERSION
from memx.ops.registry import custom_ops as registered_custom_ops
from memx.ops.registry import exporting_custom_ops, get_custom_op

DEFAULT_OPSET = 18
GRAPH_FILE = "model.onnx"
WEIGHTS_FILE = "reference/weights.safetensors"
EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB go to model.onnx.data


def _segment_dim(model: SegmentModel, segment_max: int) -> int | str:
    """The segment axis of the graphs: symbolic, or 1 in a package of 1-token segments
    (torch.export cannot make a dimension dynamic with min == max)."""
    return 1 if segment_max == 1 else "segment"


def _tensor_catalog(model: SegmentModel, segment_max: int) -> dict[str, TensorInfo]:
    """Every tensor a graph of the step may take or give, by name."""
    seg = _segment_dim(model, segment_max)

    def dims(shape: tuple[int | str, ...]) -> list[int | str]:
        return [seg if d == "segment" else d for d in shape]

    infos = [TensorInfo("tokens", "int64", ["batch", seg]), TensorInfo("lengths", "int64", ["batch"]), TensorInfo("reset", "bool", ["batch"])]
    infos += [TensorInfo(i.name, i.dtype, ["batch", *dims(i.shape)]) for i in model.input_specs()]
    for s in model.state_specs():
        infos += [TensorInfo(state_input_name(s.name), s.dtype, ["batch", *s.shape]), TensorInfo(state_output_name(s.name), s.dtype, ["batch", *s.shape])]
    infos += [TensorInfo(o.name, o.dtype, dims(o.shape)) for o in model.output_specs() + model.intermediate_specs()]
    return {t.name: t for t in infos}


def _graph_infos(model: SegmentModel, segment_max: int) -> list[GraphInfo]:
    catalog = _tensor_catalog(model, segment_max)
    intermediates = {o.name for o in model.intermediate_specs()}
    producer: dict[str, str] = {}
    specs = model.graph_specs()
    graphs = []
    for g in specs:
        unknown = [n for n in g.inputs + g.outputs if n not in catalog]
        if unknown:
            raise ContractError(f"graph {g.name!r} names tensors the model does not declare", expected=sorted(catalog), actual=unknown)
        consumes = {n: producer[n] for n in g.inputs if n in intermediates and n in producer}
        missing = [n for n in g.inputs if n in intermediates and n not in producer]
        if missing:
            raise ContractError(f"graph {g.name!r} consumes tensors no earlier graph produces", expected="producer listed first", actual=missing)
        file = GRAPH_FILE if len(specs) == 1 else f"{g.name}.onnx"
        graphs.append(GraphInfo(g.name, file, g.role, [catalog[n] for n in g.inputs], [catalog[n] for n in g.outputs], consumes))
        producer.update({n: g.name for n in g.outputs})
    return graphs


def _producer(graphs: list[GraphInfo], name: str) -> str:
    for g in graphs:
        if name in {t.name for t in g.outputs}:
            return g.name
    raise ContractError(f"no graph produces {name!r}", expected="an output of some graph", actual=[g.name for g in graphs])


@contextlib.contextmanager
def _quiet_export() -> Any:
    """torch.onnx prints progress and warnings meant for its developers; keep them for errors only."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _example_feeds(model: SegmentModel, graphs: list[GraphInfo], segment_max: int) -> dict[str, torch.Tensor]:
    """Example values of every graph input: the step's example inputs, then intermediates
    computed by running the earlier graphs on them."""
    args = example_inputs(model, batch=2, segment=min(segment_max, 8))
    names = ["tokens", "lengths", "reset", *(i.name for i in model.input_specs()), *(state_input_name(s.name) for s in model.state_specs())]
    feeds = dict(zip(names, args))
    with torch.no_grad():
        for g in graphs:
            out = model.graph_module(g.name)(*(feeds[t.name] for t in g.inputs))
            feeds.update({t.name: o for t, o in zip(g.outputs, out)})
    return feeds


def _dynamic_shapes(graph: GraphInfo, batch: Dim, segment: Dim | None) -> tuple:
    """torch.export dynamic_shapes for a graph's inputs: batch on axis 0, "segment" axes."""
    specs = []
    for t in graph.inputs:
        dims = {0: batch}
        if segment is not None:
            dims.update({axis: segment for axis, d in enumerate(t.shape) if d == "segment"})
        specs.append(dims)
    return (tuple(specs),)  # the modules take *args


def _export_onnx(model: SegmentModel, graph: GraphInfo, path: Path, feeds: dict[str, torch.Tensor], segment_max: int, opset: int, custom_ops: bool) -> None:
    batch = Dim("batch", min=1, max=1 << 16)
    segment = Dim("segment", min=1, max=segment_max) if _segment_dim(model, segment_max) == "segment" else None
    _export_module(model, model.graph_module(graph.name), graph, path, feeds, _dynamic_shapes(graph, batch, segment), opset, custom_ops)


def _export_module(model: SegmentModel, module: torch.nn.Module, graph: GraphInfo, path: Path, feeds: dict[str, torch.Tensor], dynamic_shapes: tuple,
                   opset: int, custom_ops: bool) -> None:
    args = tuple(feeds[t.name] for t in graph.inputs)
    table = {op.torch_op(): op.translate for op in registered_custom_ops()} if custom_ops else None
    with _quiet_export() as log, exporting_custom_ops(custom_ops):
        try:
            program = torch.onnx.export(
                module, args, dynamo=True, dynamic_shapes=dynamic_shapes, opset_version=opset,
                input_names=[t.name for t in graph.inputs], output_names=[t.name for t in graph.outputs], verbose=False,
                custom_translation_table=table,
            )
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {model.family} graph {graph.name!r}: {type(e).__name__}: {str(e)[:2000]}\n{log.getvalue()[-2000:]}") from e
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=nbytes > EXTERNAL_DATA_THRESHOLD)


# --- decode graphs (memx.models.decode) ------------------------------------------------------------
def decode_info(model: SegmentModel, capacity: int) -> DecodeInfo | None:
    """The decode section of the manifest, or None when the model cannot decode token by token."""
    if model.decode_support() is not None:
        return None
    cache = [CacheInfo(c.name, ["batch", *c.shape], c.dtype, f"cache_in.{c.name}", f"cache_out.{c.name}", c.graph) for c in model.decode_cache_specs(capacity)]
    new: int | str = "new" if capacity > 1 else 1
    states = [t for t in _tensor_catalog(model, capacity).values() if t.name.startswith("state_in.")]
    open_graph = GraphInfo(OPEN, f"{OPEN}.onnx", OPEN, [TensorInfo("reset", "bool", ["batch"]), *states],
                           [TensorInfo(c.output, c.dtype, c.shape) for c in cache if c.graph == OPEN])
    step_graph = GraphInfo(DECODE, f"{DECODE}.onnx", DECODE,
                           [TensorInfo("tokens", "int64", ["batch", new]), TensorInfo("lengths", "int64", ["batch"]), TensorInfo("position", "int64", ["batch"]),
                            *(TensorInfo(c.input, c.dtype, c.shape) for c in cache)],
                           [TensorInfo("logits", "float32", ["batch", new, model.vocab_size]), *(TensorInfo(c.output, c.dtype, c.shape) for c in cache if c.graph == DECODE)])
    return DecodeInfo(capacity, [open_graph, step_graph], cache)


def _decode_feeds(model: SegmentModel, info: DecodeInfo) -> dict[str, torch.Tensor]:
    """Example inputs of both decode graphs: the step's reset and states, the open graph's cache,
    zero token caches, 2 rows of n tokens (n >= 2 unless the capacity is 1), one at the start of
    the segment and one at its end."""
    args = example_inputs(model, batch=2, segment=2)
    feeds = {"reset": args[2], **{state_input_name(s.name): a for s, a in zip(model.state_specs(), args[3 + len(model.input_specs()):])}}
    open_graph = info.graph(OPEN)
    with torch.no_grad():
        opened = DecodeGraph(model, OPEN, info.capacity)(*(feeds[t.name] for t in open_graph.inputs))
    feeds.update({t.name.replace("cache_out.", "cache_in."): o for t, o in zip(open_graph.outputs, opened)})
    for c in info.cache:
        if c.graph == DECODE:
            feeds[c.input] = torch.zeros(2, *c.shape[1:], dtype=getattr(torch, c.dtype))
    n = min(info.capacity, 3)  # >= 2 where the axis is dynamic: torch.export specialises size-1 dims
    feeds["tokens"] = torch.randint(0, model.vocab_size, (2, n), generator=torch.Generator().manual_seed(0))
    feeds["lengths"] = torch.tensor([n, max(1, n - 1)])
    feeds["position"] = torch.tensor([0, info.capacity - n])
    return feeds


def _export_decode(model: SegmentModel, info: DecodeInfo, stage: Path, opset: int) -> None:
    feeds = _decode_feeds(model, info)
    batch = Dim("batch", min=1, max=1 << 16)
    new = Dim("new", min=1, max=info.capacity) if info.capacity > 1 else None
    for graph in info.graphs:
        dynamic = tuple({0: batch, **({1: new} if t.name == "tokens" and new is not None else {})} for t in graph.inputs)
        _export_module(model, DecodeGraph(model, graph.role, info.capacity), graph, stage / graph.file, feeds, (dynamic,), opset, custom_ops=False)
        check_symbolic_axes(_check_graph_io(stage / graph.file, graph.inputs, graph.outputs), graph)


def _last_dim(proto: onnx.ModelProto, name: str) -> int:
    """The static size of the last axis of value ``name`` (from the exporter's value_info)."""
    for vi in list(proto.graph.value_info) + list(proto.graph.input):
        if vi.name == name:
            dim = vi.type.tensor_type.shape.dim[-1]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise ExportError(f"cannot tell the head size of custom-op input {name!r}", expected="a static last axis in value_info", actual="unknown")


def _attach_reference_bodies(proto: onnx.ModelProto, opset: int) -> list[dict[str, Any]]:
    """Give every memx custom node its model-local FunctionProto (the portable reference
    body) and the domain its opset import. Returns the manifest's custom_ops entries."""
    by_type: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        if node.domain == OPS_DOMAIN:
            by_type.setdefault(node.op_type, []).append(node)
    entries = []
    for op_type, nodes in sorted(by_type.items()):
        op = get_custom_op(op_type)
        signature = {(tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute)), sum(1 for i in n.input if i)) for n in nodes}
        if len(signature) > 1:
            raise ExportError(f"the graph uses {op_type} with {len(signature)} different attribute sets; one reference body per op type is supported",
                              expected="one configuration", actual=len(signature), hint="export with --inline-custom-ops")
        body = op.reference_body(nodes[0], head_dim=_last_dim(proto, nodes[0].input[0]), opset=opset)
        kept = [f for f in proto.functions if (f.domain, f.name) != (op.domain, op.name)]
        del proto.functions[:]
        proto.functions.extend(kept + [body])
        entries.append({"domain": op.domain, "op": op.name, "version": op.version, "nodes": len(nodes), "reference_body": "model-local function"})
    if entries and not any(o.domain == OPS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(OPS_DOMAIN, OPS_VERSION))
    return entries


def _check_graph_io(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> onnx.ModelProto:
    proto = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != [t.name for t in inputs] or got_out != [t.name for t in outputs]:
        raise ExportError("exported graph does not have the contract's inputs/outputs", expected=([t.name for t in inputs], [t.name for t in outputs]), actual=(got_in, got_out))
    return proto


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: tied weights (an LM head that is its embedding) share
    memory, so every name after the first gets its own copy (loading restores both names)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = t.clone().contiguous() if key in seen or not t.is_contiguous() else t
        seen.add(key)
    return out


def build_manifest(model: SegmentModel, *, preset: str | None, segment_max: int, opset: int, checkpoint_sha256: str | None, task: str | None = None) -> Manifest:
    graphs = _graph_infos(model, segment_max)
    catalog = _tensor_catalog(model, segment_max)
    return Manifest(
        family=model.family,
        preset=preset,
        config=model.config_dict(),
        vocab_size=model.vocab_size,
        segment={"min": 1, "max": segment_max},
        graphs=graphs,
        state=[
            StateInfo(s.name, ["batch", *s.shape], s.dtype, "fp32" if s.dtype == "float32" else s.dtype, state_input_name(s.name), state_output_name(s.name), _producer(graphs, state_output_name(s.name)))
            for s in model.state_specs()
        ],
        outputs=[OutputInfo(o.name, o.dtype, catalog[o.name].shape, o.segment_axis, _producer(graphs, o.name)) for o in model.output_specs()],
        inputs=[InputInfo(i.name, i.dtype, catalog[i.name].shape, list(i.range) if i.range is not None else None, i.pad) for i in model.input_specs()],
        precision="fp32",
        provenance={
            "memx_version": memx.__version__,
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "opset": opset,
            "exporter": "torch.onnx(dynamo)",
            "checkpoint_sha256": checkpoint_sha256,
            "weights_sha256": model.weights_sha256(),
            "parameters": model.num_parameters(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node() or "unknown",
        },
        files={},
        reference={"weights": WEIGHTS_FILE, **({"factory": model.factory} if model.factory else {})},
        causal=model.is_causal,
        task=task,
    )


def export(
    model: SegmentModel,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    segment_len: int | None = None,
    opset: int = DEFAULT_OPSET,
    checkpoint: str | os.PathLike | None = None,
    task: str | None = None,
    force: bool = False,
    verify_segments: int = 32,
    inline_custom_ops: bool = False,
    contract_checks: bool = True,
    decode: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Package:
    """Export ``model``'s segment step to the package ``out_dir``.

    The package is built in a staging directory, checked (graph I/O names, and
    parity against PyTorch over ``verify_segments`` segments unless 0), and only
    then renamed into place: a failed export leaves no package behind.

    Sparse attention is exported as memx custom ops (one node each, with a model-local
    reference body) unless ``inline_custom_ops``, which exports the plain decomposition.

    Before export the module's behaviour is checked against the contract (padding
    invariance, reset = fresh stream, empty rows keep their state: memx.exporter.contract)
    unless ``contract_checks`` is False, which the manifest records.

    Causal families also get their decode graphs (token-by-token generation inside a segment,
    memx.models.decode) unless ``decode`` is False.
    """
    say = progress or (lambda _msg: None)
    check_target(out_dir, force=force)  # before minutes of export: --force replaces only a memx package
    if not isinstance(model, SegmentModel):
        raise ContractError("model does not implement the step contract", expected="a memx.models.SegmentModel", actual=type(model).__name__)
    model = model.eval()
    segment_max = segment_len or model.max_segment_len
    if not 1 <= segment_max <= model.max_segment_len:
        raise ExportError("segment length out of range for this model", expected=f"1..{model.max_segment_len}", actual=segment_max)
    if opset < 17:
        raise ExportError("opset too old (LayerNormalization needs 17)", expected=">= 17", actual=opset)
    checkpoint_sha = load_checkpoint(model, checkpoint, candidates=named_configs) if checkpoint else None
    check_declared_io(model, max(1, min(segment_max, 8)))
    if contract_checks:
        say("checking the step contract on the module (padding, reset, empty rows)")
        check_behaviour(model, segment_max)
    manifest = build_manifest(model, preset=preset, segment_max=segment_max, opset=opset, checkpoint_sha256=checkpoint_sha, task=task)
    manifest.provenance["contract_checks"] = "passed" if contract_checks else "skipped"
    manifest.decode = decode_info(model, segment_max) if decode else None
    feeds = _example_feeds(model, manifest.graphs, segment_max)
    with staged_directory(out_dir, force=force) as stage:
        for graph in manifest.graphs:
            say(f"exporting the {graph.name} graph with torch.onnx (dynamo)")
            onnx_path = stage / graph.file
            _export_onnx(model, graph, onnx_path, feeds, segment_max, opset, custom_ops=not inline_custom_ops)
            proto = _check_graph_io(onnx_path, graph.inputs, graph.outputs)
            check_symbolic_axes(proto, graph)
            manifest.custom_ops += [{**e, "graph": graph.name} for e in _attach_reference_bodies(proto, opset)]
            onnx.save(proto, str(onnx_path))
        if manifest.decode is not None:
            say("exporting the decode graphs (token by token inside a segment)")
            _export_decode(model, manifest.decode, stage, opset)
        for graph in manifest.graphs + (manifest.decode.graphs if manifest.decode else []):  # the manifest is complete only now (custom ops of every graph)
            onnx_path = stage / graph.file
            mirror_manifest(onnx_path, onnx.load(str(onnx_path), load_external_data=False), manifest)
        (stage / WEIGHTS_FILE).parent.mkdir(parents=True, exist_ok=True)
        save_file(_unshared(model.state_dict()), str(stage / WEIGHTS_FILE))
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                manifest.files[p.relative_to(stage).as_posix()] = file_info(p)
        write_text_atomic(stage / "memx.json", manifest.to_json())
        if verify_segments:
            say(f"checking parity against PyTorch over {verify_segments} segments")
            from memx.validation.parity import validate

            report = validate(stage, segments=verify_segments, progress=False, reference_options={"model": model})
            if not report.passed:
                raise ExportError(f"exported graph does not match PyTorch: {report.summary()}")
    return Package.open(out_dir)


def export_preset(name: str, out_dir: str | os.PathLike, *, seed: int = 0, **kwargs: Any) -> Package:
    """Export a zoo model (trained weights) or a preset (weights from ``seed`` unless a
    checkpoint is given)."""
    from memx.models import build_model, build_preset
    from memx.models.zoo import get_zoo, is_zoo, require_model

    require_model(name)  # a typo names the presets, the zoo models and the closest of them
    if is_zoo(name):  # the zoo checkpoint unless the caller brings weights of the same config
        entry = get_zoo(name)
        checkpoint = kwargs.pop("checkpoint", None) or entry.checkpoint
        return export(build_model(entry.family, entry.config), out_dir, preset=name, task=entry.task, checkpoint=checkpoint, **kwargs)
    model = build_preset(name, seed=seed)
    return export(model, out_dir, preset=name, **kwargs)


def export_factory(path: str, out_dir: str | os.PathLike, *, config: dict[str, Any] | None = None, **kwargs: Any) -> Package:
    """Export the model a user's factory builds: ``path`` is "package.module:function", called
    as function({"user": config}) (the shape of the manifest's config, which another process
    passes it to rebuild the reference); the package records ``path`` as its factory."""
    from memx.models.reference import import_factory

    model = import_factory(path)({"user": dict(config or {})})
    if not isinstance(model, SegmentModel):
        raise ContractError(f"{path} did not return a memx step", expected="a SegmentModel (memx.wrap(...) makes one)", actual=type(model).__name__)
    if model.factory is None:
        model.factory = path
    return export(model, out_dir, **kwargs)
