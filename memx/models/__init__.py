"""Model families (one module each) and the registry of families and presets."""

from memx.models import gmat, infformer, kvcache, memformer, memtr, rmt  # noqa: F401  (register families and presets)
from memx.models.base import GraphSpec, OutputSpec, SegmentModel, StateSpec
from memx.models.registry import (
    Preset,
    build_model,
    build_preset,
    families,
    get_family,
    get_preset,
    presets,
    register_family,
    register_preset,
)

__all__ = [
    "GraphSpec", "OutputSpec", "Preset", "SegmentModel", "StateSpec", "build_model", "build_preset", "families",
    "get_family", "get_preset", "presets", "register_family", "register_preset",
]
