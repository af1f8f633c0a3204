"""Build tags of a TensorRT engine (recorded in memx.json `engines`) and the rules that decide
whether an engine can run here: TensorRT plans are tied to the TensorRT version (unless built
version-compatible) and to the GPU's compute capability.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memx.errors import EngineCompatibilityError, InputError, ManifestError
from memx.tensorrt import versions as tv


@dataclass
class Profile:
    """One optimization profile: for each dynamic input, min/opt/max shapes."""

    shapes: dict[str, dict[str, list[int]]]  # input -> {"min": [...], "opt": [...], "max": [...]}
    batch: tuple[int, int, int]
    segment: tuple[int, int, int] | None  # None when no input has a segment axis

    def covers(self, batch: int, segment: int | None) -> bool:
        if not self.batch[0] <= batch <= self.batch[2]:
            return False
        return self.segment is None or segment is None or self.segment[0] <= segment <= self.segment[2]

    def to_dict(self) -> dict[str, Any]:
        return {"batch": list(self.batch), "segment": list(self.segment) if self.segment else None, "shapes": self.shapes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        seg = d.get("segment")
        return cls(dict(d["shapes"]), tuple(d["batch"]), tuple(seg) if seg else None)


@dataclass
class BuildTags:
    graph: str
    file: str  # engines/GRAPH.plan inside the package
    flavour: str  # "tensorrt" | "tensorrt-rtx"
    trt_version: str
    compute_capability: str  # "sm89"
    precision: str  # the package precision the graph types encode (strongly typed)
    strongly_typed: bool
    version_compatible: bool
    profiles: list[Profile]
    custom_ops: dict[str, str] = field(default_factory=dict)  # "memx.LocalGlobalAttention" -> "plugin" | "function body"
    timing_cache: bool = False
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [p.to_dict() for p in self.profiles]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "BuildTags":
        try:
            d = dict(d)
            d["profiles"] = [Profile.from_dict(p) for p in d["profiles"]]
            return cls(**d)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"manifest engines entry is malformed ({type(e).__name__}: {e})", expected="build tags written by memx build", actual=str(d)[:200]) from None


def engine_tags(pkg: Any) -> list[BuildTags]:
    """The build tags of a package's engines (memx.json `engines`)."""
    return [BuildTags.from_dict(e) for e in pkg.manifest.engines]


def choose_profile(profiles: list[Profile], batch: int, segment: int | None) -> int:
    """Index of the first profile whose ranges hold (batch, segment)."""
    for i, p in enumerate(profiles):
        if p.covers(batch, segment):
            return i
    ranges = [f"batch {p.batch[0]}..{p.batch[2]}" + (f", segment {p.segment[0]}..{p.segment[2]}" if p.segment else "") for p in profiles]
    raise EngineCompatibilityError("no optimization profile of the engine holds this call", expected=" or ".join(ranges), actual=f"batch {batch}" + (f", segment {segment}" if segment is not None else ""),
                                   hint="rebuild with `memx build --batch/--segment-len` covering it")


def check_runnable(tags: BuildTags, *, flavour: str, trt_version: str, compute_capability: str | None) -> None:
    """Refuse an engine that this TensorRT / GPU cannot run, naming both sides."""
    if tags.flavour != flavour:
        raise EngineCompatibilityError(f"engine for graph {tags.graph!r} was built by another TensorRT flavour", expected=tags.flavour, actual=flavour,
                                       hint="rebuild it here with `memx build`")
    built, here = tv.parse_version(tags.trt_version), tv.parse_version(trt_version)
    if tags.version_compatible:
        if here < built:
            raise EngineCompatibilityError(f"version-compatible engine for graph {tags.graph!r} needs a TensorRT at least as new as the one that built it",
                                           expected=f">= {tags.trt_version}", actual=trt_version)
    elif _release(tags.trt_version) != _release(trt_version):
        raise EngineCompatibilityError(f"engine for graph {tags.graph!r} was built with another TensorRT version", expected=tags.trt_version, actual=trt_version,
                                       hint="rebuild with `memx build` on this machine, or build with --version-compatible")
    if compute_capability is not None and normalize_cc(compute_capability) != normalize_cc(tags.compute_capability):
        raise EngineCompatibilityError(f"engine for graph {tags.graph!r} was built for another GPU", expected=tags.compute_capability, actual=normalize_cc(compute_capability),
                                       hint="rebuild with `memx build --target-cc` for this GPU (build Jetson engines on the device)")


def _release(version: str) -> tuple[int, ...]:
    """Plans are tied to the release (major.minor.patch); the build number does not matter."""
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def parse_cc(text: str | None) -> float | None:
    """'sm89' / '8.9' / '89' -> 8.9."""
    if text is None:
        return None
    t = str(text).lower().removeprefix("sm").removeprefix("_")
    try:
        return float(t) if "." in t else int(t) / 10
    except ValueError:
        raise InputError("not a compute capability", expected="sm75, sm80, sm86, sm87, sm89, sm90, sm100, sm120 (or 8.9)", actual=text) from None


def normalize_cc(cc: str | float | tuple[int, int]) -> str:
    """'sm89' | '8.9' | 8.9 | (8, 9) -> 'sm89'."""
    if isinstance(cc, tuple):
        return f"sm{cc[0]}{cc[1]}"
    value = parse_cc(str(cc)) if not isinstance(cc, float) else cc
    return f"sm{int(round(value * 10))}"
