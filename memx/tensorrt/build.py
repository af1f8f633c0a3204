"""`memx build --backend tensorrt`: TensorRT engines for every graph of a package.

With `tensorrt` importable the engine is built for the local GPU; otherwise TensorRT-RTX
builds it ahead of time for a named compute capability on any machine (no GPU needed), which
is how CI proves that every exported graph parses and builds. Precision follows the graph
(strongly typed: Q/DQ and fp16 types decide, as TensorRT 11 requires). Engines go to
`engines/GRAPH.plan` inside the package and their build tags into memx.json `engines`;
memx.json is replaced last and atomically, so a failed build leaves the package as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from memx.errors import EngineCompatibilityError, EngineError, GraphImportError, InputError
from memx.package.manifest import GraphInfo, Manifest
from memx.package.files import Package, file_info, file_mode, update_manifest
from memx.tensorrt import versions as tv
from memx.tensorrt.tags import BuildTags, Profile, normalize_cc

log = logging.getLogger("memx.tensorrt")
ENGINE_DIR = "engines"


def parse_range(text: str | None, *, name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """'1,8,32' -> (1, 8, 32); '8' -> (8, 8, 8); None -> default."""
    if text is None:
        return default
    try:
        parts = [int(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise InputError(f"{name} must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX", expected="e.g. 1,8,32", actual=text)
    return parts[0], parts[1], parts[2]


def make_profile(graph: GraphInfo, batch: tuple[int, int, int], segment: tuple[int, int, int], seg_limits: dict[str, int], *, axis: str = "segment") -> Profile:
    """Min/opt/max shapes of every graph input: symbolic 'batch' and ``axis`` ('segment'; 'new'
    for the decode graph's new tokens) dims take the ranges, fixed dims stay; any other symbolic
    dim cannot be profiled."""
    if segment[2] > seg_limits["max"] or segment[0] < seg_limits["min"]:
        raise InputError(f"{axis} range outside what the package allows", expected=f"within {seg_limits['min']}..{seg_limits['max']}", actual=f"{segment[0]}..{segment[2]}")
    shapes: dict[str, dict[str, list[int]]] = {}
    uses_segment = False
    for t in graph.inputs:
        triple: dict[str, list[int]] = {"min": [], "opt": [], "max": []}
        for d in t.shape:
            if isinstance(d, int):
                values = (d, d, d)
            elif d == "batch":
                values = batch
            elif d == axis:
                values, uses_segment = segment, True
            else:
                raise EngineError(f"graph {graph.name!r} input {t.name!r} has the dynamic dim {d!r}, which no profile covers", expected=f"batch, {axis} or fixed dims", actual=t.shape)
            for key, v in zip(("min", "opt", "max"), values):
                triple[key].append(int(v))
        shapes[t.name] = triple
    return Profile(shapes, batch, segment if uses_segment else None)


class _Logger:
    """Collects TensorRT's log lines (errors go into EngineError messages)."""

    def __init__(self, trt: Any):
        outer = self

        class Impl(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                outer.lines.append((severity, msg))
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    log.debug("TensorRT: %s", msg)

        self.lines: list[tuple[Any, str]] = []
        self.trt = trt
        self.impl = Impl()

    def errors(self) -> list[str]:
        bad = (self.trt.ILogger.Severity.ERROR, self.trt.ILogger.Severity.INTERNAL_ERROR)
        return [m for s, m in self.lines if s in bad]


@dataclass
class GraphBuild:
    tags: BuildTags
    plan: bytes
    timing_cache: bytes | None


def _local_cc() -> str | None:
    """The compute capability of GPU 0, which full TensorRT builds for (None: no GPU visible to torch)."""
    try:
        import torch
    except ImportError:
        return None
    return normalize_cc(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None


def _network_flags(flavour: tv.Flavour) -> int:
    trt = flavour.module
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None or (not flavour.rtx and tv.strongly_typed_only(tv.parse_version(flavour.version))):
        return 0  # TensorRT 11: every network is strongly typed
    return 1 << int(flag)


PLUGIN_CHOICES = ("auto", "aot", "jit", "off")


def plugin_mode(choice: str, flavour: tv.Flavour) -> str:
    """What imports memx ops: "aot" / "jit" (the tensorrt.plugin plugins) or "off" (function bodies).
    "auto": AOT on TensorRT >= 10.9, JIT on 10.6-10.8, function bodies on TensorRT-RTX and older."""
    if choice not in PLUGIN_CHOICES:
        raise InputError("unknown --plugin choice", expected=list(PLUGIN_CHOICES), actual=choice)
    if choice == "off":
        return "off"
    from memx.tensorrt.plugin import load_trtp, register_plugins

    version = tv.parse_version(flavour.version)
    auto = tv.auto_plugin_mode(version, rtx=flavour.rtx)  # the rule memx doctor and memx inspect describe
    if auto == "off":
        if choice == "auto":
            return "off"
        raise EngineError(f"--plugin {choice} needs full TensorRT >= {tv.PLUGINS_SINCE} with tensorrt.plugin", expected=f"tensorrt >= {tv.PLUGINS_SINCE}",
                          actual=f"{flavour.name} {flavour.version}", hint="use --plugin off (the function bodies) for TensorRT-RTX")
    mode = auto if choice == "auto" else choice
    if mode == "aot" and not tv.aot_plugins(version):
        raise EngineError("ahead-of-time plugins need TensorRT >= 10.9", expected=">= 10.9", actual=flavour.version, hint="use --plugin jit")
    trt, trtp = load_trtp()
    register_plugins(trt, trtp, aot=mode == "aot")
    return mode


def _parse(parser: Any, onnx_path: Path, plugins: str) -> bool:
    """Parse the graph; with plugins, a rewritten copy (beside the original, so external data resolves)."""
    if plugins == "off":
        return bool(parser.parse_from_file(str(onnx_path)))
    import onnx

    from memx.tensorrt.plugin import plugin_graph

    model, used = plugin_graph(onnx.load(str(onnx_path), load_external_data=False), aot=plugins == "aot")
    if not used:
        return bool(parser.parse_from_file(str(onnx_path)))
    fd, tmp = tempfile.mkstemp(prefix=f".{onnx_path.stem}.plugins.", suffix=".onnx", dir=onnx_path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        return bool(parser.parse_from_file(tmp))
    finally:
        os.unlink(tmp)


def parser_errors(parser: Any, *, limit: int = 6) -> str:
    """The parser's errors, each distinct one once: "MatMulInteger: unsupported node (x12, e.g. node
    'mm_quant')" rather than its bare descriptions ("false; false; ...")."""
    counts: dict[str, list[str]] = {}
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        op, node = _call(e, "node_operator"), _call(e, "node_name")
        desc = _call(e, "desc")
        code = str(_call(e, "code")).rsplit(".", 1)[-1].lower().replace("_", " ")
        text = f"{op or 'graph'}: {desc if desc and desc.lower() not in ('false', 'true') else code}"
        counts.setdefault(text, []).append(node)
    items = [f"{text} (x{len(nodes)}, e.g. node {nodes[0]!r})" if len(nodes) > 1 else text + (f" (node {nodes[0]!r})" if nodes[0] else "")
             for text, nodes in counts.items()]
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "") or "no error reported"


def _call(obj: Any, name: str) -> str:
    fn = getattr(obj, name, None)
    try:
        return str(fn()) if callable(fn) else ""
    except Exception:  # an accessor this TensorRT lacks or cannot answer
        return ""


def build_graph(flavour: tv.Flavour, onnx_path: Path, graph: GraphInfo, profiles: list[Profile], *, target_cc: str, precision: str,
                version_compatible: bool, timing_cache: bytes | None, engine_file: str, plugins: str = "off") -> GraphBuild:
    trt = flavour.module
    logger = _Logger(trt)
    builder = trt.Builder(logger.impl)
    flags = _network_flags(flavour)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger.impl)
    if not _parse(parser, onnx_path, plugins):
        raise GraphImportError(f"TensorRT's ONNX parser refused graph {graph.name!r}", expected="a graph TensorRT imports", actual=parser_errors(parser),
                               hint=f"run `memx doctor {onnx_path.parent} --target tensorrt`")
    config = builder.create_builder_config()
    if flavour.rtx:
        member = getattr(trt.ComputeCapability, target_cc.upper(), None)
        if member is None:
            choices = sorted(m.lower() for m in dir(trt.ComputeCapability) if m.startswith("SM"))
            raise EngineCompatibilityError("TensorRT-RTX cannot build for this compute capability", expected=f"one of {choices}", actual=target_cc)
        config.num_compute_capabilities = 1
        config.set_compute_capability(member, 0)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if flavour.rtx:  # RTX ships no lean runtime to embed: the plan then needs one where it runs
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    for profile in profiles:
        p = builder.create_optimization_profile()
        for name, s in profile.shapes.items():
            p.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(p)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    took = time.perf_counter() - t0
    if plan is None:
        raise EngineError(f"TensorRT could not build graph {graph.name!r}", expected="an engine", actual="; ".join(logger.errors())[:2000] or "no engine")
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3") if hasattr(trt.LayerType, n)}
    has_plugin = any(network.get_layer(i).type in plugin_types for i in range(network.num_layers))
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    how = f"plugin ({plugins})" if has_plugin else "function body"
    custom = {f"{n.domain}.{n.op_type}": how for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    for op, how in sorted(custom.items()):
        log.info("graph %s: %s imported as %s", graph.name, op, how)
    tags = BuildTags(graph=graph.name, file=engine_file, flavour=flavour.name, trt_version=flavour.version, compute_capability=target_cc, precision=precision,
                     strongly_typed=bool(flags) or (not flavour.rtx and tv.strongly_typed_only(tv.parse_version(flavour.version))),
                     version_compatible=version_compatible, profiles=profiles, custom_ops=custom, timing_cache=timing_cache is not None, build_seconds=round(took, 3))
    return GraphBuild(tags, bytes(plan), bytes(cache.serialize()))


def build_engines(package: str | os.PathLike | Package, *, batch: str | None = None, segment_len: list[str] | str | None = None,
                  target_cc: str | None = None, version_compatible: bool = False, timing_cache: str | os.PathLike | None = None,
                  prefer: str | None = None, plugin: str = "auto", decode: bool = True, progress: Callable[[str], None] | None = None) -> list[BuildTags]:
    """Build one engine per graph and record them in the package (replacing earlier engines).
    ``plugin``: how memx ops are imported (``plugin_mode``). ``decode``: the decode graphs
    (memx generate) too, where the package has them, for the batch range and 1..capacity new
    tokens per call (optimized for one)."""
    pkg = package if isinstance(package, Package) else Package.open(package)
    flavour = tv.installed_flavour(prefer)
    if flavour is None:
        raise EngineError("no TensorRT builder is installed", expected="tensorrt (GPU hosts, JetPack) or TensorRT-RTX (pip install 'memx-toolkit[tensorrt-rtx]')", actual="neither importable")
    m: Manifest = pkg.manifest
    if flavour.rtx:
        cc = normalize_cc(target_cc or "sm89")
    else:
        local = _local_cc()
        cc = normalize_cc(target_cc) if target_cc else local
        if cc is None:
            raise EngineError("full TensorRT builds for the local GPU, and none was found", expected="a CUDA GPU", actual="none", hint="use TensorRT-RTX for ahead-of-time builds")
        if local is not None and cc != local:
            raise EngineCompatibilityError("TensorRT builds for the GPU it runs on", expected=local, actual=cc, hint="build on the target device (Jetson: on the board)")
    graphs = [g.name for g in m.graphs] + ([g.name for g in m.decode.graphs] if decode and m.decode is not None else [])
    refuse_what_doctor_refuses(pkg, graphs, flavour, target_cc=cc)
    plugins = plugin_mode(plugin, flavour) if m.custom_ops else "off"
    batch_range = parse_range(batch, name="--batch", default=(1, 1, 8))
    ranges = segment_len if isinstance(segment_len, list) else [segment_len] if segment_len else [None]
    seg_ranges = [parse_range(r, name="--segment-len", default=(m.segment["min"], m.segment["max"], m.segment["max"])) for r in ranges]
    cache_path = Path(timing_cache) if timing_cache else None
    cache = cache_path.read_bytes() if cache_path and cache_path.is_file() else None
    builds: list[GraphBuild] = []
    jobs = [(g, [make_profile(g, batch_range, r, m.segment) for r in seg_ranges]) for g in m.graphs]
    if decode and m.decode is not None:
        new_tokens = {"min": 1, "max": m.decode.capacity}
        jobs += [(g, [make_profile(g, batch_range, (1, 1, m.decode.capacity), new_tokens, axis="new")]) for g in m.decode.graphs]
    for g, profiles in jobs:
        if progress:
            progress(f"building {g.name} ({flavour.name} {flavour.version}, {cc})")
        b = build_graph(flavour, pkg.file(g.file), g, profiles, target_cc=cc, precision=m.precision, version_compatible=version_compatible,
                        timing_cache=cache, engine_file=f"{ENGINE_DIR}/{g.name}.plan", plugins=plugins)
        cache = b.timing_cache
        builds.append(b)
    _commit(pkg, builds)
    if cache_path is not None and cache:
        cache_path.write_bytes(cache)
    return [b.tags for b in builds]


def refuse_what_doctor_refuses(pkg: Package, graphs: list[str], flavour: tv.Flavour, *, target_cc: str | None = None) -> None:
    """memx doctor's errors in ``graphs`` (for the installed TensorRT) as one GraphImportError,
    before TensorRT parses anything: the reasons and fixes doctor gives, each once."""
    from memx.tensorrt.doctor import diagnose, summarize

    report = diagnose(pkg.path, target_cc=target_cc)
    errors = [f for f in report.errors if f.graph in graphs]
    if not errors:
        return
    what, fix = summarize(errors)
    headline = f"{flavour.name} {flavour.version} cannot import the graphs of {pkg.path.name}"
    if pkg.manifest.precision == "int8-dynamic":
        ops = "/".join(sorted(tv.INTEGER_QUANT_OPS & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}))
        headline += f": int8-dynamic is ONNX Runtime's dynamic quantization, and its {ops} ops are not TensorRT-importable (use int8-qdq)"
    raise GraphImportError(headline, expected="graphs TensorRT's ONNX parser imports (memx doctor: no errors)", actual=f"{len(errors)} doctor error(s): {what}",
                           hint=(f"fix: {fix}; " if fix else "") + f"`memx doctor {pkg.path}` lists every finding")


def _commit(pkg: Package, builds: list[GraphBuild]) -> None:
    """Write the plans (each atomically), then the manifest; stale plans of earlier builds go."""
    engine_dir = pkg.path / ENGINE_DIR
    engine_dir.mkdir(exist_ok=True)
    files = {k: v for k, v in pkg.manifest.files.items() if not k.startswith(f"{ENGINE_DIR}/")}
    for b in builds:
        target = pkg.path / b.tags.file
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=engine_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(b.plan)
        os.chmod(tmp, file_mode())  # mkstemp makes it owner-only; the umask says who else may read it
        os.replace(tmp, target)
        files[b.tags.file] = file_info(target)
    manifest = dataclasses.replace(pkg.manifest, files=files, engines=[b.tags.to_dict() for b in builds])
    old = {k for k in pkg.manifest.files if k.startswith(f"{ENGINE_DIR}/")} - set(files)
    update_manifest(pkg, manifest)
    for rel in old:
        (pkg.path / rel).unlink(missing_ok=True)
