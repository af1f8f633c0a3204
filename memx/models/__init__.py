"""Model families (one module each) and the registry of families and presets."""

from memx.models import gmat, infformer, kvcache, memformer, memtr, rmt  # noqa: F401  (register families and presets)
from memx.models import zoo_entries  # noqa: F401  (registers the shipped zoo models)
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



def create(name: str, *, pretrained: bool = True, seed: int = 0) -> SegmentModel:
    """A model by preset or zoo name, in eval mode (timm's ``create_model`` shape): a zoo
    model with its trained weights unless ``pretrained=False``; otherwise weights from ``seed``.

        model = memx.models.create("gmat-majority")            # trained zoo checkpoint
        model = memx.models.create("rmt-small", seed=3)        # a preset, random weights
    """
    from memx.models.zoo import build_zoo_model, get_zoo, is_zoo, require_model

    require_model(name)
    if is_zoo(name):
        if pretrained:
            return build_zoo_model(name)
        entry = get_zoo(name)
        return build_model(entry.family, entry.config, seed=seed).eval()
    return build_preset(name, seed=seed).eval()


__all__ = [
    "create", "GraphSpec", "OutputSpec", "Preset", "SegmentModel", "StateSpec", "build_model", "build_preset", "families",
    "get_family", "get_preset", "presets", "register_family", "register_preset",
]
