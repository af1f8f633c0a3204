"""Loading trained weights into a model: safetensors only, names and shapes checked strictly.
A checkpoint that does not fit says which tensors are missing, unexpected or mis-shaped, and
names the preset or zoo model whose tensors it does fit, if any."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load_file

from memx.errors import CheckpointError
from memx.models.base import SegmentModel
from memx.package.files import sha256_file

Shapes = dict[str, tuple[int, ...]]
SHOWN = 3  # tensor names quoted per kind of mismatch


@dataclass(frozen=True)
class Mismatch:
    """How a checkpoint's tensors differ from a model's, by name and shape."""

    missing: list[str]  # the model has them, the checkpoint does not
    unexpected: list[str]  # the checkpoint has them, the model does not
    misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (name, checkpoint shape, model shape)

    @classmethod
    def of(cls, model: Shapes, checkpoint: Shapes) -> "Mismatch":
        both = sorted(set(model) & set(checkpoint))
        return cls(sorted(set(model) - set(checkpoint)), sorted(set(checkpoint) - set(model)),
                   [(n, checkpoint[n], model[n]) for n in both if checkpoint[n] != model[n]])

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def describe(self) -> str:
        """"2 missing (a, b), 1 unexpected (c), 1 mis-shaped (d: [64, 32] in the checkpoint, [64, 64] in the model)"."""
        parts = [f"{len(names)} {kind} ({_few(names)})" for kind, names in (("missing", self.missing), ("unexpected", self.unexpected)) if names]
        if self.misshaped:
            shown = [f"{n}: {list(c)} in the checkpoint, {list(m)} in the model" for n, c, m in self.misshaped]
            parts.append(f"{len(shown)} mis-shaped ({_few(shown, sep='; ')})")
        return ", ".join(parts)


def _few(items: list[str], *, sep: str = ", ") -> str:
    return sep.join(items[:SHOWN]) + (f"{sep}… {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def shapes_of(state: dict[str, Any]) -> Shapes:
    return {k: tuple(int(d) for d in v.shape) for k, v in state.items()}


Candidates = Callable[[], list[tuple[str, str, dict[str, Any]]]]  # () -> [(label, family, config)], e.g. memx.models.zoo.named_configs


def fitting_models(checkpoint: Shapes, candidates: Candidates, *, exclude: Shapes | None = None) -> list[str]:
    """The labels of ``candidates`` ("preset 'rmt-small'", "zoo model 'rmt-ar'") whose tensors
    match ``checkpoint`` exactly by name and shape, those matching ``exclude`` (the model that refused it) left out."""
    from memx.models.registry import build_model

    fits = []
    for label, family, config in candidates():
        try:
            shapes = shapes_of(build_model(family, config).state_dict())
        except Exception:  # noqa: BLE001  (a candidate that cannot be built here fits nothing)
            continue
        if shapes == checkpoint and shapes != exclude:
            fits.append(label)
    return fits


def checkpoint_error(name: str, model: SegmentModel, own: Shapes, checkpoint: Shapes, candidates: Candidates | None = None) -> CheckpointError:
    """The error for a checkpoint whose tensors do not fit ``model``: what differs, and (given
    ``candidates``) the named models it fits instead."""
    fits = fitting_models(checkpoint, candidates, exclude=own) if candidates is not None else []
    family = getattr(model, "family", None) or type(model).__name__
    return CheckpointError(f"checkpoint {name} does not fit the {family} model", expected=f"the model's {len(own)} tensors by name and shape",
                           actual=f"{len(checkpoint)} tensors: {Mismatch.of(own, checkpoint).describe()}",
                           hint=f"this checkpoint fits {' and '.join(fits)}" if fits else None)


def load_checkpoint(model: SegmentModel, path: str | os.PathLike, *, candidates: Candidates | None = None) -> str:
    """Load a safetensors checkpoint strictly (names and shapes); returns its sha256. A checkpoint
    that does not fit names the ``candidates`` it fits (memx.models.zoo.named_configs: presets and zoo models)."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError("checkpoints must be safetensors files", expected="*.safetensors", actual=p.name)
    if not p.is_file():
        raise CheckpointError("checkpoint not found", expected="an existing file", actual=str(p))
    try:
        tensors = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types on bad headers
        raise CheckpointError(f"cannot read checkpoint {p.name}: {e}") from None
    own, theirs = shapes_of(model.state_dict()), shapes_of(tensors)
    if Mismatch.of(own, theirs):
        raise checkpoint_error(p.name, model, own, theirs, candidates)
    model.load_state_dict(tensors, strict=True)
    return sha256_file(p)
