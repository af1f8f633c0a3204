"""The zoo's catalogue: small models trained here on the seed papers' synthetic tasks.

An entry names a family and config, the task it was trained on, the segment length, the
checkpoint shipped in ``memx/zoo/checkpoints/`` (safetensors) and the training settings,
so ``memx train`` reproduces it. The entries themselves are registered by
``memx/models/zoo_entries.py`` when ``memx.models`` is imported; ``memx.zoo`` is the public
face (with the tools that make and report the models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memx.errors import PackageFileError
from memx.registry import Registry

CHECKPOINTS = Path(__file__).resolve().parents[1] / "zoo" / "checkpoints"  # shipped as package data of memx.zoo


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    config: dict[str, Any]
    task: str
    segment_len: int
    train: dict[str, Any]  # TrainConfig values used (besides task and segment_len)
    description: str
    chance: float  # accuracy of guessing, for the reader of reports
    metric: str = "items"  # what `chance` and the reported accuracy count: "items" (whole answers) or "tokens"
    metrics: dict[str, float] = field(default_factory=dict)  # measured when the checkpoint was made
    paper: str = ""  # the seed paper's closest configuration and its figure, for docs/zoo.md

    def score(self, task_score: Any) -> float:
        """The entry's headline accuracy from a :class:`~memx.validation.accuracy.TaskScore`."""
        return task_score.accuracy if self.metric == "items" else task_score.token_accuracy

    @property
    def checkpoint(self) -> Path:
        return CHECKPOINTS / f"{self.name}.safetensors"

    def trained_accuracy(self) -> float | None:
        """The held-out accuracy (by ``metric``) of the last evaluation in training, if recorded."""
        record = self.checkpoint.with_suffix(".train.json")
        if not record.is_file():
            return None
        history = json.loads(record.read_text()).get("history") or []
        return float(history[-1]["accuracy" if self.metric == "items" else "token_accuracy"]) if history else None

    def reproduce(self) -> str:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.train.items())
        return f"python -m memx.zoo.make {self.name}  # = train {self.task} on {self.family} {self.config}, segment {self.segment_len}, {opts}"


_ZOO: Registry[ZooEntry] = Registry("zoo model")


def register_zoo(entry: ZooEntry) -> None:
    _ZOO.add(entry.name, entry)


def zoo_entries() -> list[ZooEntry]:
    return list(_ZOO.values())


def is_zoo(name: str) -> bool:
    return name in _ZOO


def get_zoo(name: str) -> ZooEntry:
    return _ZOO.get(name)


def build_zoo_model(name: str):
    """The zoo model with its trained weights (names and shapes checked strictly)."""
    from memx.models.checkpoint import load_checkpoint
    from memx.models.registry import build_model

    entry = get_zoo(name)
    if not entry.checkpoint.is_file():
        raise PackageFileError(f"zoo checkpoint for {name!r} is missing", expected=str(entry.checkpoint), actual="no file", hint=f"rebuild it: {entry.reproduce()}")
    model = build_model(entry.family, entry.config)
    load_checkpoint(model, entry.checkpoint)
    return model.eval()
