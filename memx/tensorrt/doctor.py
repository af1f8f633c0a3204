"""`memx doctor --target tensorrt`: static checks of a package (or a bare .onnx) for TensorRT.

Each check is one function in the CHECKS registry; it looks at one graph and yields Findings
(severity, where, what, and the fix). Nothing is built and no GPU is needed: the rules come
from memx.tensorrt.versions, and the installed ONNX parser (tensorrt or TensorRT-RTX) is asked
which ops it imports when there is one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from memx.errors import InputError, PackageFileError
from memx.tensorrt import versions as tv
from memx.onnxgraph import all_nodes
from memx.ops.registry import DOMAIN
from memx.tensorrt.plugin import plugin_facts
from memx.registry import Registry
from memx.tensorrt.tags import parse_cc

SEVERITIES = ("error", "warning", "info")
MIN_EXPORT_OPSET = 17  # memx export's oldest opset (memx.exporter refuses older)
STEP_DIMS = {"batch", "segment", "new"}  # the dims memx's optimization profiles cover ("new": the decode graph's new tokens)
FP8_TYPES = {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E5M2", "FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ") if hasattr(onnx.TensorProto, n)}
INT4_TYPES = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4") if hasattr(onnx.TensorProto, n)}


@dataclass
class Finding:
    severity: str  # error | warning | info
    check: str
    graph: str
    message: str
    fix: str = ""
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraphContext:
    """What a check sees: one graph and the target."""

    name: str
    model: onnx.ModelProto
    version: tv.TrtVersion
    target_cc: float | None  # e.g. 8.9; None: unknown
    supports_op: Callable[[str], bool]
    plugins: set[str]  # registered plugin names ("memx::LocalGlobalAttention" or bare names)
    state_inputs: list[str]
    state_outputs: list[str]
    functions: dict[tuple[str, str], onnx.FunctionProto] = field(default_factory=dict)

    def find(self, severity: str, check: str, message: str, fix: str = "", node: onnx.NodeProto | None = None) -> Finding:
        return Finding(severity, check, self.name, message, fix, node.name if node is not None and node.name else (node.op_type if node is not None else None))


Check = Callable[[GraphContext], Iterable[Finding]]
CHECKS: Registry[Check] = Registry("doctor check")


def check(name: str) -> Callable[[Check], Check]:
    def wrap(fn: Check) -> Check:
        CHECKS.add(name, fn)
        return fn

    return wrap


@dataclass
class DoctorReport:
    target: str
    trt_version: str
    version_source: str
    parser: str  # which op table was used
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"format": "memx.doctor", "version": 1, "target": self.target, "trt_version": self.trt_version, "version_source": self.version_source,
                "parser": self.parser, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


# --- helpers ---------------------------------------------------------------------------------------
def _is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _plugin_name(node: onnx.NodeProto) -> str:
    ns = _attr(node, "plugin_namespace")
    ns = ns.decode() if isinstance(ns, bytes) else ns
    return f"{ns}::{node.op_type}" if ns else node.op_type


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


# --- checks ----------------------------------------------------------------------------------------
@check("unsupported_ops")
def check_unsupported_ops(ctx: GraphContext) -> Iterator[Finding]:
    seen: set[str] = set()
    nodes = list(all_nodes(ctx.model))
    for fn in ctx.functions.values():  # the reference bodies the parser imports for custom nodes
        nodes += list(fn.node)
    for node in nodes:
        if not _is_default_domain(node) or node.op_type in seen:
            continue
        if node.op_type == "Attention" and not tv.onnx_attention_op(ctx.version):
            seen.add(node.op_type)
            yield ctx.find("error", "unsupported_ops", f"ONNX Attention is imported from TensorRT 10.14 on, not by {ctx.version}", "target TensorRT >= 10.14, or export attention as MatMul/Softmax/MatMul", node)
            continue
        reduction = _attr(node, "reduction") if node.op_type == "ScatterElements" else None
        reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
        if reduction not in (None, "none") and "ScatterElements" not in ctx.plugins:
            seen.add(node.op_type)
            yield ctx.find("error", "unsupported_ops", f"ScatterElements with reduction={reduction!r}: TensorRT imports it only through the ScatterElements plugin of "
                           "libnvinfer_plugin, which is not registered here (TensorRT-RTX has none)",
                           "compute the update without a scatter reduction, e.g. a one-hot sum: (F.one_hot(ids, V) * mask[..., None]).sum(1)", node)
            continue
        if not ctx.supports_op(node.op_type):
            seen.add(node.op_type)
            integer = node.op_type in tv.INTEGER_QUANT_OPS
            fix = ("TensorRT takes explicit quantization only: `memx quantize --method int8-qdq` (Q/DQ) instead of int8-dynamic, which is for ONNX Runtime"
                   if integer else "re-export without this op, or provide a TensorRT plugin for it")
            yield ctx.find("error", "unsupported_ops", f"the TensorRT {ctx.version} ONNX parser does not import {node.op_type}", fix, node)


@check("io_dtypes")
def check_io_dtypes(ctx: GraphContext) -> Iterator[Finding]:
    for kind, values in (("input", ctx.model.graph.input), ("output", ctx.model.graph.output)):
        for v in values:
            elem = v.type.tensor_type.elem_type
            name = onnx.TensorProto.DataType.Name(elem)
            if elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING, onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128, onnx.TensorProto.UINT64,
                        onnx.TensorProto.UINT32, onnx.TensorProto.UINT16, onnx.TensorProto.INT16):
                yield ctx.find("error", "io_dtypes", f"graph {kind} {v.name!r} is {name}, which TensorRT has no tensor type for", "re-export with float32/float16/int32/int64/bool I/O")
            elif elem == onnx.TensorProto.UINT8:
                yield ctx.find("error", "io_dtypes", f"graph {kind} {v.name!r} is UINT8, which TensorRT's ONNX parser refuses as a graph input or output",
                               "carry it as bool or int32 (memx.wrap carries bool memories as bool)")
            elif elem == onnx.TensorProto.INT64 and not tv.native_int64(ctx.version):
                yield ctx.find("warning", "io_dtypes", f"graph {kind} {v.name!r} is INT64: TensorRT {ctx.version} casts it to INT32 (values beyond 2^31 are clamped)",
                               "token ids and lengths fit in INT32; target TensorRT >= 9 for native INT64")
            elif elem == onnx.TensorProto.BFLOAT16 and not tv.bfloat16(ctx.version):
                yield ctx.find("error", "io_dtypes", f"graph {kind} {v.name!r} is BFLOAT16, supported from TensorRT 9.0", "export in float16 or float32 for this TensorRT")


@check("dynamic_shapes")
def check_dynamic_shapes(ctx: GraphContext) -> Iterator[Finding]:
    for v in ctx.model.graph.input:
        dims = v.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if d.HasField("dim_value"):
                continue
            if v.name in ctx.state_inputs and axis > 0:
                yield ctx.find("error", "dynamic_shapes", f"state input {v.name!r} has a dynamic dim at axis {axis}: states must be fixed-size apart from the batch axis",
                               "export the state with a static shape ([batch, fixed dims])")
            elif not d.dim_param:
                yield ctx.find("warning", "dynamic_shapes", f"input {v.name!r} axis {axis} is dynamic and unnamed: its range must be given in every optimization profile",
                               "name the dim (batch/segment) at export, or give min/opt/max shapes for it")
            elif d.dim_param not in STEP_DIMS:
                yield ctx.find("warning", "dynamic_shapes", f"input {v.name!r} axis {axis} is the dynamic dim {d.dim_param!r}, which memx's profiles (batch, segment, new) do not cover",
                               "make it static at export, or build with explicit shapes for it")
    for node in all_nodes(ctx.model):
        if _is_default_domain(node) and node.op_type in tv.DATA_DEPENDENT_SHAPE_OPS:
            yield ctx.find("warning", "dynamic_shapes", f"{node.op_type} has a data-dependent output shape: TensorRT allocates for its upper bound and may be slow",
                           "avoid it in the step graph (use masks of fixed shape)", node)


@check("custom_ops")
def check_custom_ops(ctx: GraphContext) -> Iterator[Finding]:
    v = ctx.version
    reported: set[tuple[str, str]] = set()
    for node in all_nodes(ctx.model):
        if _is_default_domain(node) or (node.domain, node.op_type) in reported:
            continue
        reported.add((node.domain, node.op_type))
        op = f"{node.domain}.{node.op_type}"
        body = (node.domain, node.op_type) in ctx.functions
        plugin = _plugin_name(node) in ctx.plugins or node.op_type in ctx.plugins
        has_ns = _attr(node, "plugin_namespace") is not None
        if not tv.local_functions_supported(v):
            if plugin:
                yield ctx.find("info", "custom_ops", f"{op}: TensorRT {v} imports it as the registered plugin {_plugin_name(node)}", node=node)
            else:
                own = f" (memx's own plugin needs TensorRT >= {tv.PLUGINS_SINCE})" if node.domain == DOMAIN else ""
                yield ctx.find("error", "custom_ops", f"{op}: TensorRT {v} cannot import model-local functions and no plugin {_plugin_name(node)} is registered",
                               f"target TensorRT >= 9.0 (the reference body is then imported), or register your own TensorRT plugin for the op{own}", node)
            continue
        if not body and not plugin:
            yield ctx.find("error", "custom_ops", f"{op} has neither a function body in the model nor a registered plugin",
                           "re-export with memx (every memx op carries its reference body), or register a plugin", node)
        elif plugin and not tv.plugin_overrides_function(v) and body:
            yield ctx.find("warning", "custom_ops", f"{op}: TensorRT {v} imports the function body; the registered plugin cannot override it before 10.7",
                           "strip model.functions from the graph to use the plugin on this TensorRT", node)
        elif plugin and tv.plugin_needs_namespace_attribute(v) and not has_ns and body:
            yield ctx.find("warning", "custom_ops", f"{op}: TensorRT {v} uses the plugin only when the node has a plugin_namespace attribute (or kENABLE_PLUGIN_OVERRIDE is set); it imports the function body",
                           "re-export with memx (it sets plugin_namespace), or set OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE", node)
        elif plugin:
            yield ctx.find("info", "custom_ops", f"{op}: imported as the registered plugin {_plugin_name(node)}", node=node)
        elif node.domain == DOMAIN:
            yield _memx_op_finding(ctx, node)
        else:
            yield ctx.find("info", "custom_ops", f"{op}: no plugin registered, TensorRT {v} imports the reference body (dense; correct but slower than a plugin)",
                           _foreign_plugin_fix(v), node)


def _memx_op_finding(ctx: GraphContext, node: onnx.NodeProto) -> Finding:
    """A memx op with its reference body and no plugin registered: what `memx build --plugin auto`
    makes of it on the target TensorRT (the facts memx inspect shows too); the fix names only what
    that version can do, and the version a faster import needs."""
    facts = plugin_facts(node.op_type, ctx.version)
    if facts.mode in ("aot", "jit"):
        return ctx.find("info", "custom_ops", f"{facts.op}: no plugin registered here; `memx build --plugin auto` on TensorRT {ctx.version} imports {facts.imports}",
                        "build with full TensorRT" + (f"; {facts.better}" if facts.better else "")
                        + "; with --plugin off (or TensorRT-RTX) the reference body is imported (dense; correct but slower)", node)
    return ctx.find("info", "custom_ops", f"{facts.op}: TensorRT {ctx.version} imports {facts.imports}",
                    f"nothing to do on TensorRT {ctx.version} (the body is correct); a faster import needs {facts.better}" if facts.better else "", node)


def _foreign_plugin_fix(v: tv.TrtVersion) -> str:
    """Registering a plugin for a node that has a function body helps only where the plugin wins (TensorRT >= 10.7)."""
    if tv.plugin_overrides_function(v):
        return "register a TensorRT plugin for the op"
    return (f"register a TensorRT plugin for the op and strip its function body from the graph (TensorRT {v} imports the body even when a plugin "
            "is registered; from 10.7 a registered plugin wins)")


@check("opset")
def check_opset(ctx: GraphContext) -> Iterator[Finding]:
    for imp in ctx.model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > tv.max_opset(ctx.version):
            yield ctx.find("warning", "opset", f"the graph uses ONNX opset {imp.version}; TensorRT {ctx.version} documents opsets up to {tv.max_opset(ctx.version)}",
                           _opset_fix(ctx.version))


def _opset_fix(v: tv.TrtVersion) -> str:
    """Re-exporting at the parser's opset, where memx can export that opset; else the TensorRT that can take memx's oldest."""
    best = tv.max_opset(v)
    if best >= MIN_EXPORT_OPSET:
        return f"re-export with --opset {best} if the parser refuses a node"
    return (f"memx exports opset {MIN_EXPORT_OPSET} or later (LayerNormalization) and TensorRT {v} documents up to {best}: "
            f"target TensorRT >= {tv.min_version_for_opset(MIN_EXPORT_OPSET)}")


@check("qdq")
def check_qdq(ctx: GraphContext) -> Iterator[Finding]:
    inits = _initializers(ctx.model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    nodes = list(ctx.model.graph.node)
    for node in nodes:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    qdq = [n for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear") and _is_default_domain(n)]
    if not qdq:
        return
    graph_outputs = {o.name for o in ctx.model.graph.output}
    for node in qdq:
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None:
            if zp.data_type == onnx.TensorProto.UINT8:
                yield ctx.find("error", "qdq", f"{node.op_type} uses a UINT8 (asymmetric) zero point: TensorRT takes signed INT8 with zero point 0 (UINT8 only for DLA)",
                               "quantize symmetrically (memx quantize does: ActivationSymmetric/WeightSymmetric)", node)
            elif np.any(numpy_helper.to_array(zp) != 0):
                yield ctx.find("error", "qdq", f"{node.op_type} has a non-zero zero point: TensorRT requires zero point 0", "quantize symmetrically", node)
            if zp.data_type in FP8_TYPES and ctx.target_cc is not None and ctx.target_cc < 8.9:
                yield ctx.find("error", "qdq", f"FP8 Q/DQ needs compute capability >= 8.9, the target is sm{int(ctx.target_cc * 10)}", "use INT8 Q/DQ for this GPU (Jetson Orin is sm87)", node)
            if zp.data_type in INT4_TYPES and ctx.version < tv.V("10.0"):
                yield ctx.find("error", "qdq", f"INT4 Q/DQ is supported from TensorRT 10.0, not {ctx.version}", "use INT8 Q/DQ", node)
        source = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None and source.data_type == onnx.TensorProto.INT32:
            users = ", ".join(sorted({u.op_type for u in consumers.get(node.output[0], [])})) or "nothing"
            yield ctx.find("error", "qdq", f"DequantizeLinear of an INT32 constant (a quantized bias, used by {users}): TensorRT's explicit quantization takes INT8/FP8 Q/DQ only",
                           "keep biases in float (memx quantize does: QuantizeBias off)", node)
        if node.op_type == "QuantizeLinear":
            users = consumers.get(node.output[0], [])
            if node.output[0] in graph_outputs or any(u.op_type != "DequantizeLinear" for u in users):
                yield ctx.find("error", "qdq", "QuantizeLinear output is used by something other than DequantizeLinear: TensorRT's explicit quantization needs Q->DQ pairs",
                               "quantize the inputs of weighted ops (Q->DQ->MatMul), never outputs", node)
    if ctx.state_inputs and ctx.state_outputs:
        from memx.onnxgraph import find_memory_path

        path = find_memory_path(ctx.model, ctx.state_inputs, ctx.state_outputs, through=frozenset({"QuantizeLinear", "DequantizeLinear"}))
        on_path = [n for n in qdq if n.input[0] in path.tensors or n.output[0] in path.tensors]
        if on_path:
            yield ctx.find("warning", "qdq", f"{len(on_path)} Q/DQ node(s) round the memory state itself; TensorRT will carry the memory in INT8 and errors compound over segments",
                           "re-quantize with the default policy (memx quantize keeps the memory path fp32)", on_path[0])


def summarize(findings: list[Finding], *, limit: int = 4) -> tuple[str, str]:
    """(what, fix) of several findings in one line each: every distinct message once with the
    graphs it holds for (the first ``limit``, then how many more), and the distinct fixes."""
    graphs: dict[str, list[str]] = {}
    for f in findings:
        seen = graphs.setdefault(f.message, [])
        if f.graph not in seen:
            seen.append(f.graph)
    items = [f"{msg} (in {', '.join(g)})" for msg, g in graphs.items()]
    what = "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")
    fixes = list(dict.fromkeys(f.fix for f in findings if f.fix))
    return what, "; ".join(fixes)


# --- entry point -----------------------------------------------------------------------------------
def _parser_support(flavour: tv.Flavour | None) -> tuple[Callable[[str], bool], str]:
    if flavour is not None:
        try:
            trt = flavour.module
            logger = trt.Logger(trt.Logger.ERROR)
            parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
            return (lambda op: bool(parser.supports_operator(op))), f"the installed {flavour.name} {flavour.version} ONNX parser"
        except Exception:  # no usable builder (e.g. no GPU for full TensorRT): fall back to the table
            pass
    return (lambda op: op not in tv.UNSUPPORTED_OPS), "memx's table of ops the TensorRT 10/11 parser does not import"


def _registered_plugins(flavour: tv.Flavour | None) -> set[str]:
    if flavour is None:
        return set()
    registry = getattr(flavour.module, "get_plugin_registry", None)
    if registry is None:
        return set()
    creators = registry().all_creators
    names = set()
    for c in creators:
        ns = getattr(c, "plugin_namespace", "")
        names.add(f"{ns}::{c.name}" if ns else c.name)
    return names


def _graphs(path: Path) -> list[tuple[str, Path, list[str], list[str]]]:
    """(name, onnx file, state inputs, state outputs) for a package dir or a bare .onnx file."""
    if path.is_dir():
        from memx.package.files import Package

        from memx.package.manifest import memory_io

        pkg = Package.open(path)
        m = pkg.manifest
        return [(g.name, pkg.file(g.file), *memory_io(m, g)) for g in m.graphs + (m.decode.graphs if m.decode else [])]
    if path.suffix == ".onnx" and path.is_file():
        model = onnx.load(str(path), load_external_data=False)
        ins = [i.name for i in model.graph.input if i.name.startswith("state_in.")]
        outs = [o.name for o in model.graph.output if o.name.startswith("state_out.")]
        return [(path.stem, path, ins, outs)]
    raise PackageFileError("nothing to check", expected="a package directory or a .onnx file", actual=str(path))


def diagnose(path: str | Path, *, target: str = "tensorrt", trt_version: str | None = None, target_cc: str | None = None,
             checks: Iterable[str] | None = None) -> DoctorReport:
    """Run every check (or the named ones) over every graph of ``path``."""
    if target != "tensorrt":
        raise InputError("unknown doctor target", expected="tensorrt", actual=target)
    flavour = tv.installed_flavour()
    version, source = tv.target_version(trt_version, flavour)
    # the installed parser speaks for its own version only
    same = trt_version is None or (flavour is not None and flavour.name == "tensorrt" and tv.parse_version(flavour.version) == version)
    supports, parser = _parser_support(flavour if same else None)
    plugins = _registered_plugins(flavour)
    names = list(checks) if checks is not None else list(CHECKS)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise InputError("unknown doctor checks", expected=f"some of {sorted(CHECKS)}", actual=unknown)
    findings: list[Finding] = []
    for name, file, state_in, state_out in _graphs(Path(path)):
        model = onnx.load(str(file), load_external_data=False)
        ctx = GraphContext(name, model, version, parse_cc(target_cc), supports, plugins, state_in, state_out,
                           {(f.domain, f.name): f for f in model.functions})
        for check_name in names:
            findings.extend(CHECKS[check_name](ctx))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])
    return DoctorReport(target, str(version), source, parser, findings)
