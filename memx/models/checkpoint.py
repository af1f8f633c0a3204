"""Loading trained weights into a model: safetensors only, names and shapes checked strictly."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file

from memx.errors import CheckpointError
from memx.models.base import SegmentModel
from memx.package.files import sha256_file


def load_checkpoint(model: SegmentModel, path: str | os.PathLike) -> str:
    """Load a safetensors checkpoint strictly (names and shapes); returns its sha256."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError("checkpoints must be safetensors files", expected="*.safetensors", actual=p.name)
    if not p.is_file():
        raise CheckpointError("checkpoint not found", expected="an existing file", actual=str(p))
    try:
        tensors = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types on bad headers
        raise CheckpointError(f"cannot read checkpoint {p.name}: {e}") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError("checkpoint does not fit the model", expected=f"missing none (missing {missing[:5]})", actual=f"unexpected {unexpected[:5]}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            raise CheckpointError(f"checkpoint tensor {name!r} has the wrong shape", expected=list(own[name].shape), actual=list(t.shape))
    model.load_state_dict(tensors, strict=True)
    return sha256_file(p)
