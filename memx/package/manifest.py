"""The package manifest (``memx.json``): the only contract between exporter and runtimes.

The manifest is versioned (``format_version``) and validated on read: unknown
versions, missing or mistyped fields and unknown keys are refused with a
:class:`~memx.errors.ManifestError` naming the field, what was expected and
what was found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from memx.errors import ManifestError, ManifestVersionError
from memx.package.limits import MAX_JSON_DEPTH, json_depth, strict_json_loads
from memx.package.precisions import PRECISIONS

FORMAT = "memx.package"
FORMAT_VERSION = 1
MANIFEST_FILE = "memx.json"
METADATA_KEY = "memx.manifest"  # key of the mirrored manifest in ONNX metadata_props

DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")


SEQUENCE_DIMS = ("segment", "new")  # the step's tokens; the decode graph's new tokens


def concrete_shape(spec: list[int | str], batch: int, segment: int) -> tuple[int, ...]:
    """A manifest shape with its "batch" and sequence ("segment", or "new" in a decode graph) dims filled in."""
    return tuple(batch if d == "batch" else segment if d in SEQUENCE_DIMS else int(d) for d in spec)


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]  # str entries are symbolic dims ("batch", "segment")


@dataclass
class GraphInfo:
    name: str
    file: str
    role: str  # "step" for single-graph packages; e.g. "encoder"/"decoder" for Memformer
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    # inputs that are outputs of an earlier graph of the same step: {input name: producing graph}
    consumes: dict[str, str] = field(default_factory=dict)


@dataclass
class StateInfo:
    name: str
    shape: list[int | str]  # ["batch", ...fixed dims]; the batch axis is always 0
    dtype: str
    precision: str
    input: str  # graph input name, "state_in.<name>"
    output: str  # graph output name, "state_out.<name>"
    graph: str  # the graph that produces the next state


@dataclass
class InputInfo:
    """An extra step input beyond tokens/lengths/reset (DESIGN.md §8): fed by the caller each
    step. ``shape`` is ["batch", ...] with fixed dims or "segment" (the tokens' length: padded
    with ``pad`` and masked by lengths); integer inputs carry their ``range`` [low, high)."""

    name: str
    dtype: str
    shape: list[int | str]
    range: list[int] | None = None
    pad: int | float = 0

    def sample(self, rng: Any, batch: int, segment: int) -> Any:
        """Random values of this input for one step (numpy rng): ids in the range, bools,
        floats ~ N(0, 1). For validation, calibration and profiling runs that have no data for it."""
        shape = concrete_shape(self.shape, batch, segment)
        if self.dtype == "bool":
            return rng.random(shape) < 0.5
        if self.range is not None:
            return rng.integers(self.range[0], self.range[1], size=shape).astype(self.dtype)
        return rng.standard_normal(shape).astype(self.dtype)


@dataclass
class OutputInfo:
    name: str
    dtype: str
    shape: list[int | str]
    segment_axis: int | None  # positions past lengths[b] along this axis are zero
    graph: str


@dataclass
class CacheInfo:
    """One tensor of the decode cache (DESIGN.md §8): batch axis 0, fixed dims after; ``graph``
    is the decode graph that writes it ("decode_open": from the read memory, once a segment;
    "decode": the segment's tokens, slot by slot; runtimes start it from zeros)."""

    name: str
    shape: list[int | str]
    dtype: str
    input: str  # "cache_in.<name>"
    output: str  # "cache_out.<name>"
    graph: str


@dataclass
class DecodeInfo:
    """Token-by-token decoding inside a segment (memx.models.decode): two graphs beside the step,

        decode_open(reset, *state_in) -> *cache_out of the "decode_open" entries
        decode(tokens [B, new], lengths, position, *cache_in) -> logits [B, new, V], *cache_out of the "decode" entries

    ``capacity``: tokens one segment holds while decoding (the token cache's slots). Only the
    step graph writes memory: a runtime steps the segment's tokens when it is full."""

    capacity: int
    graphs: list[GraphInfo]
    cache: list[CacheInfo]

    def graph(self, role: str) -> GraphInfo:
        return next(g for g in self.graphs if g.role == role)


DECODE_GRAPHS = ("decode_open", "decode")
DECODE_INPUTS = ("tokens", "lengths", "position")


@dataclass
class FileInfo:
    bytes: int
    sha256: str


@dataclass
class Manifest:
    family: str
    preset: str | None
    config: dict[str, Any]
    vocab_size: int
    segment: dict[str, int]  # {"min": 1, "max": N}
    graphs: list[GraphInfo]
    state: list[StateInfo]
    outputs: list[OutputInfo]
    precision: str
    provenance: dict[str, Any]
    files: dict[str, FileInfo]
    reference: dict[str, str] = field(default_factory=dict)  # {"weights": "reference/weights.safetensors"}
    custom_ops: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    causal: bool = False  # no token output depends on later tokens of its segment
    task: str | None = None  # the synthetic task a zoo model was trained on
    quantization: dict[str, Any] | None = None  # method, calibration, precision policy (memx quantize)
    engines: list[dict[str, Any]] = field(default_factory=list)  # TensorRT plans and their build tags (memx build)
    inputs: list[InputInfo] = field(default_factory=list)  # extra step inputs, in the order the graphs take them
    decode: DecodeInfo | None = None  # decode graphs (causal families): generation token by token
    onnxruntime_cpu: dict[str, Any] | None = None  # graphs rewritten for ONNX Runtime's CPU kernels (memx build --backend onnxruntime)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    # --- identity ---------------------------------------------------------------------------
    def model_id(self) -> str:
        """What a snapshot is bound to: family, config, state schema and weights. Written into
        memx.json as ``model_id``; libmemx computes the same (cpp/runtime/src/manifest.cc) and both
        refuse a stored id that differs."""
        ident = {
            "family": self.family,
            "config": self.config,
            "state": [[s.name, s.shape, s.dtype] for s in self.state],
            "weights": self.provenance.get("weights_sha256"),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def graph(self, role: str = "step") -> GraphInfo:
        for g in self.graphs:
            if g.role == role:
                return g
        raise ManifestError(f"package has no graph with role {role!r}", expected=role, actual=[g.role for g in self.graphs])

    def graph_named(self, name: str) -> GraphInfo:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ManifestError(f"package has no graph named {name!r}", expected=[g.name for g in self.graphs], actual=name)

    def sample_inputs(self, rng: Any, batch: int, segment: int) -> dict[str, Any]:
        """Random values of every extra step input (none for most packages): {name: array}."""
        return {i.name: i.sample(rng, batch, segment) for i in self.inputs}

    @property
    def step_inputs(self) -> list[str]:
        """Names a step feeds from outside the graphs: tokens, lengths, reset, extra inputs, state inputs."""
        return ["tokens", "lengths", "reset", *(i.name for i in self.inputs), *(s.input for s in self.state)]

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["engines"]:
            del d["engines"]  # written only once there are engines, so readers before memx build still read it
        if d["decode"] is None:
            del d["decode"]  # written only by packages with decode graphs: older readers cannot generate from them
        if not d["inputs"]:
            del d["inputs"]  # written only by models with extra inputs: older readers, which cannot feed them, refuse those
        if d["onnxruntime_cpu"] is None:
            del d["onnxruntime_cpu"]  # written only by memx build --backend onnxruntime: older readers refuse those packages
        head = {"format": d.pop("format"), "format_version": d.pop("format_version"), "model_id": self.model_id()}
        return {**head, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def mirror_json(self) -> str:
        """The manifest as mirrored into ONNX metadata: without file hashes (they would be
        circular) and without validation results (those are added after export)."""
        d = self.to_dict()
        d.pop("files")
        d.pop("validation")
        d.pop("engines", None)  # built later, like validation results
        d.pop("onnxruntime_cpu", None)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        return _parse_manifest(data)

    @classmethod
    def from_json(cls, text: str, *, source: str = MANIFEST_FILE) -> "Manifest":
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise ManifestError(f"{source} is nested too deeply", expected=f"at most {MAX_JSON_DEPTH} levels of arrays and objects", actual=depth)
        try:
            data = strict_json_loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{source} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except ValueError as e:
            raise ManifestError(f"{source} is not valid JSON ({e})") from None
        return _parse_manifest(data)

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = MANIFEST_FILE) -> "Manifest":
        """A manifest from memx.json's bytes: strict UTF-8 (as libmemx reads it), then :meth:`from_json`."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError(f"{source} is not UTF-8 text", expected="UTF-8", actual=f"byte {raw[e.start]:#04x} at offset {e.start}") from None
        return cls.from_json(text, source=source)


# --- schema validation ---------------------------------------------------------------------------
_TYPES = {"str": str, "int": int, "dict": dict, "list": list, "bool": bool}


def _field(obj: dict, key: str, kind: str, where: str, *, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise ManifestError(f"manifest field {where}{key} is missing", expected=f"a {kind}", actual="nothing")
    value = obj[key]
    if value is None and optional:
        return None
    ok = isinstance(value, _TYPES[kind]) and not (kind == "int" and (isinstance(value, bool) or not -(1 << 63) <= value < 1 << 63))
    if not ok:  # an int field holds a 64-bit signed integer, as libmemx reads it
        raise ManifestError(f"manifest field {where}{key} has the wrong type", expected=kind, actual=type(value).__name__)
    return value


def _no_unknown(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ManifestError(f"manifest {where or 'top level'} has unknown fields", expected=f"only {sorted(allowed)}", actual=unknown)


def _shape(value: Any, where: str) -> list[int | str]:
    if not isinstance(value, list) or not all(
        (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 63) or (isinstance(d, str) and d) for d in value
    ):
        raise ManifestError(f"manifest field {where} is not a shape", expected="a list of non-negative ints or dim names", actual=value)
    return value


def _dtype(value: str, where: str) -> str:
    if value not in DTYPES:
        raise ManifestError(f"manifest field {where} has an unknown dtype", expected=f"one of {list(DTYPES)}", actual=value)
    return value


def _tensor(obj: Any, where: str) -> TensorInfo:
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest field {where} is not an object", expected="object", actual=type(obj).__name__)
    _no_unknown(obj, {"name", "dtype", "shape"}, where)
    return TensorInfo(
        name=_field(obj, "name", "str", where + "."),
        dtype=_dtype(_field(obj, "dtype", "str", where + "."), where + ".dtype"),
        shape=_shape(_field(obj, "shape", "list", where + "."), where + ".shape"),
    )


def _objects(data: dict, key: str, where: str = "") -> list[dict]:
    items = _field(data, key, "list", where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ManifestError(f"manifest field {where}{key}[{i}] is not an object", expected="object", actual=type(item).__name__)
    return items


def _parse_consumes(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestError(f"manifest field {where} is not a map of input name to graph name", expected="{str: str}", actual=value)
    return dict(value)


def _parse_graph(g: dict, where: str) -> GraphInfo:
    _no_unknown(g, {"name", "file", "role", "inputs", "outputs", "consumes"}, where)
    return GraphInfo(
        name=_field(g, "name", "str", where + "."),
        file=_field(g, "file", "str", where + "."),
        role=_field(g, "role", "str", where + "."),
        inputs=[_tensor(t, f"{where}.inputs[{i}]") for i, t in enumerate(_objects(g, "inputs", where + "."))],
        outputs=[_tensor(t, f"{where}.outputs[{i}]") for i, t in enumerate(_objects(g, "outputs", where + "."))],
        consumes=_parse_consumes(g.get("consumes"), where + ".consumes"),
    )


def _check_batch_then_fixed(shape: list[int | str], where: str) -> None:
    """A carried tensor's shape (state, decode cache): the batch axis first, fixed dims after."""
    if not shape or shape[0] != "batch" or not all(isinstance(d, int) for d in shape[1:]):
        raise ManifestError(f"manifest field {where}.shape must have the batch axis first and fixed dims after", expected='["batch", int, ...]', actual=shape)


def _parse_state(s: dict, where: str) -> StateInfo:
    _no_unknown(s, {"name", "shape", "dtype", "precision", "input", "output", "graph"}, where)
    info = StateInfo(
        name=_field(s, "name", "str", where + "."),
        shape=_shape(_field(s, "shape", "list", where + "."), where + ".shape"),
        dtype=_dtype(_field(s, "dtype", "str", where + "."), where + ".dtype"),
        precision=_field(s, "precision", "str", where + "."),
        input=_field(s, "input", "str", where + "."),
        output=_field(s, "output", "str", where + "."),
        graph=_field(s, "graph", "str", where + "."),
    )
    _check_batch_then_fixed(info.shape, where)
    if info.input == info.output:
        raise ManifestError(f"state {info.name!r} uses one tensor as input and output", expected="distinct names", actual=info.input)
    return info


def _parse_output(o: dict, where: str) -> OutputInfo:
    _no_unknown(o, {"name", "dtype", "shape", "segment_axis", "graph"}, where)
    axis = _field(o, "segment_axis", "int", where + ".", optional=True)
    info = OutputInfo(
        name=_field(o, "name", "str", where + "."),
        dtype=_dtype(_field(o, "dtype", "str", where + "."), where + ".dtype"),
        shape=_shape(_field(o, "shape", "list", where + "."), where + ".shape"),
        segment_axis=axis,
        graph=_field(o, "graph", "str", where + "."),
    )
    return info


def _check_segment_axis(o: OutputInfo, where: str, segment: dict[str, int]) -> None:
    """``segment_axis`` is where the "segment" dim is (null when the output has none; in a
    package of one fixed segment length, a dim of that length may be it): pools cut each row's
    output to its length along it, so an edited axis must not slice another dim."""
    want = next((i for i, d in enumerate(o.shape) if d == "segment"), None)
    axis = o.segment_axis
    fixed = want is None and axis is not None and 1 <= axis < len(o.shape) and segment["min"] == segment["max"] == o.shape[axis]
    if axis != want and not fixed:
        raise ManifestError(f"manifest field {where}.segment_axis does not point at the output's segment dim",
                            expected="null" if want is None else want, actual="null" if axis is None else axis)


def _parse_input(o: Any, where: str) -> InputInfo:
    if not isinstance(o, dict):
        raise ManifestError(f"manifest field {where} is not an object", expected="object", actual=type(o).__name__)
    _no_unknown(o, {"name", "dtype", "shape", "range", "pad"}, where)
    info = InputInfo(
        name=_field(o, "name", "str", where + "."),
        dtype=_dtype(_field(o, "dtype", "str", where + "."), where + ".dtype"),
        shape=_shape(_field(o, "shape", "list", where + "."), where + ".shape"),
        range=_field(o, "range", "list", where + ".", optional=True),
        pad=o.get("pad", 0),
    )
    if info.name in ("tokens", "lengths", "reset") or info.name.startswith(("state_in.", "state_out.")):
        raise ManifestError(f"manifest field {where}.name is reserved", expected="a name other than tokens/lengths/reset/state_*", actual=info.name)
    if not info.shape or info.shape[0] != "batch" or not all(d == "segment" or (isinstance(d, int) and d >= 1) for d in info.shape[1:]):
        raise ManifestError(f"manifest field {where}.shape must be the batch axis, then fixed dims or \"segment\"", expected='["batch", int | "segment", ...]', actual=info.shape)
    integer = info.dtype.startswith(("int", "uint"))
    if integer and (info.range is None or len(info.range) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in info.range) or info.range[0] >= info.range[1]):
        raise ManifestError(f"manifest field {where}.range must be [low, high) of ints", expected="[low, high] with low < high", actual=info.range)
    if not isinstance(info.pad, (int, float)) or isinstance(info.pad, bool) or (integer and not (isinstance(info.pad, int) and info.range[0] <= info.pad < info.range[1])):
        raise ManifestError(f"manifest field {where}.pad is not a value of the input", expected=f"a number{f' in {info.range}' if integer else ''}", actual=info.pad)
    return info


def _parse_cache(c: dict, where: str) -> CacheInfo:
    _no_unknown(c, {"name", "shape", "dtype", "input", "output", "graph"}, where)
    info = CacheInfo(
        name=_field(c, "name", "str", where + "."),
        shape=_shape(_field(c, "shape", "list", where + "."), where + ".shape"),
        dtype=_dtype(_field(c, "dtype", "str", where + "."), where + ".dtype"),
        input=_field(c, "input", "str", where + "."),
        output=_field(c, "output", "str", where + "."),
        graph=_field(c, "graph", "str", where + "."),
    )
    _check_batch_then_fixed(info.shape, where)
    if (info.input, info.output) != (f"cache_in.{info.name}", f"cache_out.{info.name}"):
        raise ManifestError(f"manifest field {where} names its tensors wrongly", expected=[f"cache_in.{info.name}", f"cache_out.{info.name}"], actual=[info.input, info.output])
    if info.graph not in DECODE_GRAPHS:
        raise ManifestError(f"manifest field {where}.graph is not a decode graph", expected=list(DECODE_GRAPHS), actual=info.graph)
    return info


def _parse_decode(d: dict | None) -> DecodeInfo | None:
    if d is None:
        return None
    _no_unknown(d, {"capacity", "graphs", "cache"}, "decode")
    return DecodeInfo(
        capacity=_field(d, "capacity", "int", "decode."),
        graphs=[_parse_graph(g, f"decode.graphs[{i}]") for i, g in enumerate(_objects(d, "graphs", "decode."))],
        cache=[_parse_cache(c, f"decode.cache[{i}]") for i, c in enumerate(_objects(d, "cache", "decode."))],
    )


def _check_decode(m: Manifest) -> None:
    """The decode graphs take and give exactly what DecodeInfo says, in order; their files are listed."""
    d = m.decode
    if d is None:
        return
    if not 1 <= d.capacity <= m.segment["max"]:
        raise ManifestError("manifest decode.capacity is out of range", expected=f"1..{m.segment['max']} (segment.max)", actual=d.capacity)
    if [(g.name, g.role) for g in d.graphs] != [(n, n) for n in DECODE_GRAPHS]:
        raise ManifestError("manifest decode.graphs are not the decode graphs", expected=[f"{n} (role {n})" for n in DECODE_GRAPHS],
                            actual=[f"{g.name} (role {g.role})" for g in d.graphs])
    names = [c.name for c in d.cache]
    if len(set(names)) != len(names):
        raise ManifestError("manifest decode cache names are not unique", expected="unique names", actual=names)
    open_graph, decode_graph = d.graphs
    state_inputs = {s.input for s in m.state}
    wants = {
        "decode_open inputs": ([t.name for t in open_graph.inputs], [n for n in [t.name for t in open_graph.inputs] if n == "reset" or n in state_inputs]),
        "decode_open outputs": ([t.name for t in open_graph.outputs], [c.output for c in d.cache if c.graph == "decode_open"]),
        "decode inputs": ([t.name for t in decode_graph.inputs], [*DECODE_INPUTS, *(c.input for c in d.cache)]),
        "decode outputs": ([t.name for t in decode_graph.outputs], ["logits", *(c.output for c in d.cache if c.graph == "decode")]),
    }
    for what, (actual, expected) in wants.items():
        if actual != expected:
            raise ManifestError(f"manifest decode graph {what} differ from its cache and the step's state", expected=expected, actual=actual)
    if "reset" not in [t.name for t in open_graph.inputs]:
        raise ManifestError("manifest decode_open graph does not take reset", expected="reset among its inputs", actual=[t.name for t in open_graph.inputs])
    if not any(o.name == "logits" for o in m.outputs):
        raise ManifestError("a package with decode graphs has no logits output", expected="an output named logits", actual=[o.name for o in m.outputs])
    for g in d.graphs:
        if g.file not in m.files:
            raise ManifestError(f"graph {g.name!r} file is not listed in files", expected=g.file, actual=sorted(m.files))


def _parse_files(files: dict) -> dict[str, FileInfo]:
    out = {}
    for path, info in files.items():
        where = f"files[{path!r}]"
        if not isinstance(info, dict):
            raise ManifestError(f"manifest field {where} is not an object", expected="object", actual=type(info).__name__)
        _no_unknown(info, {"bytes", "sha256"}, where)
        out[path] = FileInfo(bytes=_field(info, "bytes", "int", where + "."), sha256=_field(info, "sha256", "str", where + "."))
    return out


_TOP_LEVEL = {
    "format", "format_version", "family", "preset", "config", "vocab_size", "segment", "graphs", "state",
    "outputs", "precision", "provenance", "files", "reference", "custom_ops", "validation", "causal", "task",
    "quantization", "engines", "model_id", "inputs", "decode", "onnxruntime_cpu",
}


def _parse_manifest(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object", expected="object", actual=type(data).__name__)
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ManifestError("not a memx manifest", expected=f"format {FORMAT!r}", actual=repr(fmt))
    version = _field(data, "format_version", "int", "")
    if version != FORMAT_VERSION:
        raise ManifestVersionError(
            "unsupported manifest format_version", expected=FORMAT_VERSION, actual=version,
            hint="re-export the package with this memx, or upgrade memx" if version > FORMAT_VERSION else "re-export the package",
        )
    _no_unknown(data, _TOP_LEVEL, "")
    segment = _field(data, "segment", "dict", "")
    seg_min, seg_max = _field(segment, "min", "int", "segment."), _field(segment, "max", "int", "segment.")
    if not 1 <= seg_min <= seg_max:
        raise ManifestError("manifest segment limits are inconsistent", expected="1 <= min <= max", actual=segment)
    vocab = _field(data, "vocab_size", "int", "")
    if vocab < 1:
        raise ManifestError("manifest vocab_size must be positive", expected=">= 1", actual=vocab)
    m = Manifest(
        family=_field(data, "family", "str", ""),
        preset=_field(data, "preset", "str", "", optional=True),
        config=_field(data, "config", "dict", ""),
        vocab_size=vocab,
        segment={"min": seg_min, "max": seg_max},
        graphs=[_parse_graph(g, f"graphs[{i}]") for i, g in enumerate(_objects(data, "graphs"))],
        state=[_parse_state(s, f"state[{i}]") for i, s in enumerate(_objects(data, "state"))],
        outputs=[_parse_output(o, f"outputs[{i}]") for i, o in enumerate(_objects(data, "outputs"))],
        precision=_field(data, "precision", "str", ""),
        provenance=_field(data, "provenance", "dict", ""),
        files=_parse_files(_field(data, "files", "dict", "")),
        reference=_field(data, "reference", "dict", "", optional=True) or {},
        custom_ops=_field(data, "custom_ops", "list", "", optional=True) or [],
        validation=_field(data, "validation", "dict", "", optional=True),
        causal=bool(_field(data, "causal", "bool", "", optional=True)),
        task=_field(data, "task", "str", "", optional=True),
        quantization=_field(data, "quantization", "dict", "", optional=True),
        engines=_field(data, "engines", "list", "", optional=True) or [],
        inputs=[_parse_input(o, f"inputs[{i}]") for i, o in enumerate(_field(data, "inputs", "list", "", optional=True) or [])],
        decode=_parse_decode(_field(data, "decode", "dict", "", optional=True)),
        onnxruntime_cpu=_field(data, "onnxruntime_cpu", "dict", "", optional=True),
    )
    _check_consistency(m)
    _check_model_id(data, m)
    return m


def _check_model_id(data: dict, m: Manifest) -> None:
    """The stored id (absent in manifests written before it was stored) must be the one the
    manifest's family, config, state schema and weights give."""
    stored = _field(data, "model_id", "str", "", optional=True)
    if stored is None:
        return
    if len(stored) != 64 or any(c not in "0123456789abcdef" for c in stored):
        raise ManifestError("manifest model_id is not a sha256", expected="64 lowercase hex digits", actual=stored)
    computed = m.model_id()
    if stored != computed:
        raise ManifestError("manifest model_id does not match its family, config, state schema and weights",
                            expected=computed[:16], actual=stored[:16], hint="the manifest was edited after export: re-export the package")


def _check_consistency(m: Manifest) -> None:
    if m.precision not in PRECISIONS:
        raise ManifestError("manifest precision is unknown", expected=f"one of {list(PRECISIONS)}", actual=m.precision)
    if not m.graphs:
        raise ManifestError("manifest lists no graphs", expected="at least one graph", actual=0)
    names = [i.name for i in m.inputs]
    if len(set(names)) != len(names):
        raise ManifestError("manifest extra input names are not unique", expected="unique names", actual=names)
    for info in m.inputs:
        fed = [t for g in m.graphs for t in g.inputs if t.name == info.name and t.name not in g.consumes]
        if not fed or any(t.dtype != info.dtype or t.shape != info.shape for t in fed):
            raise ManifestError(f"extra input {info.name!r} is not fed to a graph as declared", expected=f"a graph input {info.name} {info.dtype}{info.shape}",
                                actual=[f"{t.name} {t.dtype}{t.shape}" for t in fed] or "no graph takes it")
    graphs = {g.name: g for g in m.graphs}
    if len(graphs) != len(m.graphs):
        raise ManifestError("manifest graph names are not unique", expected="unique names", actual=[g.name for g in m.graphs])
    for s in m.state:
        g = graphs.get(s.graph)
        if g is None:
            raise ManifestError(f"state {s.name!r} names an unknown graph", expected=sorted(graphs), actual=s.graph)
        fed = any(s.input in {t.name for t in h.inputs} for h in m.graphs)
        if not fed or s.output not in {t.name for t in g.outputs}:
            raise ManifestError(f"state {s.name!r} is not wired to graph {g.name!r}", expected=f"inputs/outputs {s.input!r}/{s.output!r}", actual=[t.name for t in g.inputs + g.outputs])
    _check_pipeline(m)
    for i, o in enumerate(m.outputs):
        g = graphs.get(o.graph)
        if g is None or o.name not in {t.name for t in g.outputs}:
            raise ManifestError(f"output {o.name!r} is not an output of graph {o.graph!r}", expected=sorted(graphs), actual=o.graph)
        _check_segment_axis(o, f"outputs[{i}]", m.segment)
    for g in m.graphs:
        if g.file not in m.files:
            raise ManifestError(f"graph {g.name!r} file is not listed in files", expected=g.file, actual=sorted(m.files))
    _check_decode(m)
    _check_cpu_build(m)


CPU_BUILD_FIELDS = {"graphs", "onnxruntime", "passes", "check"}
CPU_BUILD_DIR = "onnxruntime-cpu"  # where the build's graph files live inside the package


def _check_cpu_build(m: Manifest) -> None:
    """``onnxruntime_cpu``: {"graphs": {graph name: file}, "onnxruntime": version that built it,
    "passes": {graph name: {pass: rewrites}}, "check" (optional): the drift check it passed}.
    Each graph named is one of the package's (step or decode) and its file is listed."""
    b = m.onnxruntime_cpu
    if b is None:
        return
    _no_unknown(b, CPU_BUILD_FIELDS, "onnxruntime_cpu")
    graphs = _field(b, "graphs", "dict", "onnxruntime_cpu.")
    _field(b, "onnxruntime", "str", "onnxruntime_cpu.")
    passes = _field(b, "passes", "dict", "onnxruntime_cpu.")
    _field(b, "check", "dict", "onnxruntime_cpu.", optional=True)
    for name, done in passes.items():
        if not isinstance(done, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 63
                                                  for k, v in done.items()):
            raise ManifestError(f"manifest field onnxruntime_cpu.passes[{name!r}] is not a map of pass name to rewrites", expected="{str: int}", actual=done)
    known = [g.name for g in m.graphs] + ([g.name for g in m.decode.graphs] if m.decode else [])
    exported = {g.file for g in m.graphs + (m.decode.graphs if m.decode else [])}
    if not graphs:
        raise ManifestError("manifest onnxruntime_cpu.graphs is empty", expected="at least one graph", actual=graphs)
    for name, file in graphs.items():
        if name not in known:
            raise ManifestError(f"manifest onnxruntime_cpu names an unknown graph {name!r}", expected=known, actual=name)
        if not isinstance(file, str) or file not in m.files:
            raise ManifestError(f"onnxruntime_cpu graph {name!r} file is not listed in files", expected="a file listed in files", actual=file)
        parts = file.split("/")
        if parts[0] != CPU_BUILD_DIR or len(parts) < 2 or "\\" in file or any(p in ("", ".", "..") for p in parts[1:]) or file in exported:
            raise ManifestError(f"onnxruntime_cpu graph {name!r} file is not a file of the build", expected=f"a path under {CPU_BUILD_DIR}/ (no '.' or '..'), not a graph as exported",
                                actual=file)
    if len(set(graphs.values())) != len(graphs):
        raise ManifestError("manifest onnxruntime_cpu gives two graphs the same file", expected="one file per graph", actual=sorted(graphs.values()))


def _check_pipeline(m: Manifest) -> None:
    """Graphs run in the listed order: each input is a step input or consumed from an
    earlier graph that has it as an output."""
    outside = set(m.step_inputs)
    produced: dict[str, set[str]] = {}
    for g in m.graphs:
        for t in g.inputs:
            source = g.consumes.get(t.name)
            if source is None:
                if t.name not in outside:
                    raise ManifestError(f"graph {g.name!r} input {t.name!r} has no source", expected=f"a step input {sorted(outside)} or an entry in consumes", actual=t.name)
            elif t.name not in produced.get(source, set()):
                raise ManifestError(f"graph {g.name!r} consumes {t.name!r} from {source!r}, which does not produce it earlier", expected=f"an output of an earlier graph ({sorted(produced)})", actual=source)
        unknown = set(g.consumes) - {t.name for t in g.inputs}
        if unknown:
            raise ManifestError(f"graph {g.name!r} consumes names that are not its inputs", expected=[t.name for t in g.inputs], actual=sorted(unknown))
        produced[g.name] = {t.name for t in g.outputs}


def memory_io(m: Manifest, graph: GraphInfo) -> tuple[list[str], list[str]]:
    """The inputs and outputs of ``graph`` that carry the memory: a step's state; for the decode
    graphs, the read memory (``decode_open``'s state inputs, the prefix cache ``decode`` reads).
    Decode graphs write no memory."""
    names_in, names_out = {t.name for t in graph.inputs}, {t.name for t in graph.outputs}
    if m.decode is not None and graph.name in {g.name for g in m.decode.graphs}:
        prefix = [c.input for c in m.decode.cache if c.graph == "decode_open"]
        return [n for n in [*(s.input for s in m.state), *prefix] if n in names_in], []
    return [s.input for s in m.state if s.input in names_in], [s.output for s in m.state if s.output in names_out]
