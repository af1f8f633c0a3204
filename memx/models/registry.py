"""Registry of model families and presets.

A family is a :class:`~memx.models.base.SegmentModel` subclass registered with
:func:`register_family`; a preset is a named set of config values for a family
registered with :func:`register_preset`. Tests enumerate both, so a new family
or preset is tested without touching the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch

from memx.errors import MemxError
from memx.registry import Registry
from memx.models.base import SegmentModel

_FAMILIES: Registry[type[SegmentModel]] = Registry("model family")
_PRESETS: Registry["Preset"] = Registry("preset")

M = TypeVar("M", bound=type[SegmentModel])


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    config: dict[str, Any]
    description: str
    size: str  # "tiny" (tests) or "small" (benchmarks, demos)
    tags: tuple[str, ...] = field(default_factory=tuple)


def register_family(name: str) -> Callable[[M], M]:
    def wrap(cls: M) -> M:
        _FAMILIES.add(name, cls)
        cls.family = name
        return cls

    return wrap


def register_preset(name: str, family: str, *, size: str, description: str, **config: Any) -> None:
    _PRESETS.add(name, Preset(name=name, family=family, config=config, description=description, size=size))


def families() -> dict[str, type[SegmentModel]]:
    return dict(_FAMILIES)


def presets(size: str | None = None) -> list[Preset]:
    return [p for p in _PRESETS.values() if size is None or p.size == size]


def get_family(name: str) -> type[SegmentModel]:
    return _FAMILIES.get(name)


def get_preset(name: str) -> Preset:
    return _PRESETS.get(name)


def make_config(family: str, values: dict[str, Any]) -> Any:
    """Build the family's config dataclass, refusing unknown keys with the valid ones listed."""
    cls = get_family(family).config_class
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MemxError(f"unknown config keys for family {family!r}", expected=f"keys from {sorted(known)}", actual=unknown)
    return cls(**values)


def build_model(family: str, config: dict[str, Any], *, seed: int = 0) -> SegmentModel:
    """Instantiate a family with a config dict; weights are initialised from ``seed``."""
    cls = get_family(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(make_config(family, config))
    return model.eval()


def build_preset(name: str, *, seed: int = 0, **overrides: Any) -> SegmentModel:
    p = get_preset(name)
    return build_model(p.family, {**p.config, **overrides}, seed=seed)
