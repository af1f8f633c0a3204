"""TensorRT versions and the behaviour that depends on them (../shared/notes/tensorrt-and-ort.md).

Every rule that branches on the version lives here, as a named function of a TrtVersion, so
the doctor, the builder and the runtime agree and tests enumerate the table.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

from memx.errors import InputError

LATEST_KNOWN = "11.4"  # the newest release these rules were checked against (mid-2026)


@total_ordering
@dataclass(frozen=True)
class TrtVersion:
    major: int
    minor: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: "TrtVersion") -> bool:
        return (self.major, self.minor) < (other.major, other.minor)


def parse_version(text: str) -> TrtVersion:
    """'10.3', '10.3.0.26', '11' -> TrtVersion; anything else is an InputError."""
    parts = str(text).strip().split(".")
    try:
        numbers = [int(p) for p in parts[:2]]
    except ValueError:
        numbers = []
    if not numbers or numbers[0] < 1:
        raise InputError("not a TensorRT version", expected="MAJOR.MINOR, e.g. 10.3 or 11.4", actual=text)
    return TrtVersion(numbers[0], numbers[1] if len(numbers) > 1 else 0)


V = parse_version


def local_functions_supported(v: TrtVersion) -> bool:
    """The ONNX parser imports model-local functions (custom nodes' reference bodies) from 9.0."""
    return v >= V("9.0")


def plugin_overrides_function(v: TrtVersion) -> bool:
    """A registered plugin wins over the node's function body from 10.7 (before: the body wins)."""
    return v >= V("10.7")


def plugin_needs_namespace_attribute(v: TrtVersion) -> bool:
    """From 10.15 the parser tries a plugin first only when the node carries plugin_namespace
    (or the parser flag kENABLE_PLUGIN_OVERRIDE is set)."""
    return v >= V("10.15")


def quickly_deployable_plugins(v: TrtVersion) -> bool:
    return v >= V("10.6")


def aot_plugins(v: TrtVersion) -> bool:
    return v >= V("10.9")


PLUGINS_SINCE, AOT_PLUGINS_SINCE = "10.6", "10.9"  # what quickly_deployable_plugins and aot_plugins test


def auto_plugin_mode(v: TrtVersion, *, rtx: bool = False) -> str:
    """What imports memx ops under `memx build --plugin auto`: "aot" (TensorRT >= 10.9: memx's
    Triton kernel embedded in the engine), "jit" (10.6-10.8: the kernel launched from Python),
    "off" (the ops' reference bodies: older TensorRT, and TensorRT-RTX, which has no tensorrt.plugin)."""
    if rtx or not quickly_deployable_plugins(v):
        return "off"
    return "aot" if aot_plugins(v) else "jit"


def native_int64(v: TrtVersion) -> bool:
    """INT64 tensors (I/O and most layers) from 9.0; before, the parser casts them to INT32."""
    return v >= V("9.0")


def bfloat16(v: TrtVersion) -> bool:
    return v >= V("9.0")


def onnx_attention_op(v: TrtVersion) -> bool:
    """ONNX Attention is imported (as IAttention) from 10.14."""
    return v >= V("10.14")


def strongly_typed_only(v: TrtVersion) -> bool:
    """11.x removed the precision builder flags: the graph's types, Casts and Q/DQ decide."""
    return v >= V("11.0")


_OPSETS = [(V("8.0"), 13), (V("8.5"), 17), (V("9.0"), 19), (V("10.0"), 20), (V("10.9"), 22), (V("11.0"), 23)]


def max_opset(v: TrtVersion) -> int:
    """Highest ONNX opset the parser documents support for (older releases: docs/operators.md)."""
    best = 13
    for since, opset in _OPSETS:
        if v >= since:
            best = opset
    return best


def min_version_for_opset(opset: int) -> TrtVersion:
    """The first TensorRT whose parser documents ``opset``."""
    return next((since for since, top in _OPSETS if top >= opset), _OPSETS[-1][0])


# Ops the ONNX parser of TensorRT 10.x/11.x (and TensorRT-RTX 1.x) does not import, checked with
# OnnxParser.supports_operator; the installed parser is asked directly when there is one.
UNSUPPORTED_OPS = frozenset({
    "BitShift", "Col2Im", "ConcatFromSequence", "ConvInteger", "Det", "DynamicQuantizeLinear", "MatMulInteger",
    "MaxRoiPool", "MaxUnpool", "Multinomial", "OptionalGetElement", "OptionalHasElement", "Optional", "QLinearConv",
    "QLinearMatMul", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique",
})

# ONNX Runtime's dynamic int8 quantization (memx quantize --method int8-dynamic): no TensorRT
# importer; TensorRT takes explicit quantization (Q/DQ, int8-qdq) only.
INTEGER_QUANT_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv"})

# Ops whose output shape depends on tensor values: TensorRT needs an upper bound for them.
DATA_DEPENDENT_SHAPE_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})


@dataclass(frozen=True)
class Flavour:
    """The TensorRT Python package found here: full TensorRT or TensorRT-RTX (ahead-of-time builds)."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    module: Any
    version: str

    @property
    def rtx(self) -> bool:
        return self.name == "tensorrt-rtx"


def installed_flavour(prefer: str | None = None) -> Flavour | None:
    """tensorrt when importable (it can build for and run on the local GPU), else TensorRT-RTX
    (builds ahead of time for a named compute capability on any machine), else None."""
    order = ["tensorrt", "tensorrt-rtx"] if prefer in (None, "tensorrt") else ["tensorrt-rtx", "tensorrt"]
    for name in order:
        module_name = "tensorrt" if name == "tensorrt" else "tensorrt_rtx_bindings"
        if importlib.util.find_spec(module_name) is None:
            continue
        try:
            module = importlib.import_module(module_name)
        except (ImportError, OSError):  # a broken install (e.g. the PyPI stub without its libraries) counts as absent
            continue
        return Flavour(name, module, str(getattr(module, "__version__", "0")))
    return None


def target_version(requested: str | None, flavour: Flavour | None) -> tuple[TrtVersion, str]:
    """The TensorRT version the checks are for, and where it came from."""
    if requested:
        return parse_version(requested), "--trt-version"
    if flavour is not None and flavour.name == "tensorrt":
        return parse_version(flavour.version), f"installed tensorrt {flavour.version}"
    return parse_version(LATEST_KNOWN), f"latest known TensorRT ({LATEST_KNOWN}; pass --trt-version for your target, e.g. 10.3 on JetPack 6)"
