"""The zoo's catalogue: small models trained here on the seed papers' synthetic tasks.

An entry names a family and config, the task it was trained on, the segment length, the
checkpoint shipped in ``memx/zoo/checkpoints/`` (safetensors) and the training settings,
so ``memx train`` reproduces it. The entries themselves are registered by
``memx/models/zoo_entries.py`` when ``memx.models`` is imported; ``memx.zoo`` is the public
face (with the tools that make and report the models).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memx.errors import PackageFileError, RegistryError
from memx.registry import Registry

CHECKPOINTS = Path(__file__).resolve().parents[1] / "zoo" / "checkpoints"  # shipped as package data of memx.zoo
# Accuracy of every zoo model over held-out episodes, written by `python -m memx.zoo.report`: the one
# source of the numbers `memx zoo`, docs/zoo.md and the quickstart show (tests re-measure them).
MEASURED = CHECKPOINTS / "measured.json"


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

    def measured(self) -> dict[str, Any] | None:
        """The report's measurement of this model (torch, onnxruntime, int8_qdq, generated; by
        ``metric``, over ``measured_items()`` held-out episodes), or None if it was never measured."""
        return measured_table()["models"].get(self.name)

    def reproduce(self) -> str:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.train.items())
        return f"python -m memx.zoo.make {self.name}  # = train {self.task} on {self.family} {self.config}, segment {self.segment_len}, {opts}"


def measured_table() -> dict[str, Any]:
    """measured.json: {"items": N, "models": {name: {...}}} (empty when absent)."""
    if not MEASURED.is_file():
        return {"items": 0, "models": {}}
    return json.loads(MEASURED.read_text(encoding="utf-8"))


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
    load_checkpoint(model, entry.checkpoint, candidates=named_configs)
    return model.eval()


# --- names: what `memx export NAME` and memx.models.create take ---------------------------------
def named_configs() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, family, config) of every preset and zoo model: "preset 'rmt-small'", "zoo model 'rmt-ar'"."""
    from memx.models.registry import presets

    return [(f"preset {p.name!r}", p.family, p.config) for p in presets()] + [(f"zoo model {e.name!r}", e.family, e.config) for e in zoo_entries()]


def unknown_model(name: object) -> RegistryError:
    """The error for a name that is neither a preset nor a trained zoo model: both lists, and
    the closest name of either kind."""
    from memx.models.registry import presets

    preset_names, zoo_names = sorted(p.name for p in presets()), sorted(_ZOO)
    close = difflib.get_close_matches(str(name), preset_names + zoo_names, n=1, cutoff=0.6)
    kind = "zoo model" if close and close[0] in zoo_names else "preset"
    return RegistryError(f"unknown preset {name!r}", expected=f"a preset ({', '.join(preset_names)}) or a trained zoo model ({', '.join(zoo_names)})",
                         actual=repr(name), hint=f"did you mean the {kind} {close[0]!r}?" if close else "`memx zoo` lists them")


def require_model(name: str) -> None:
    """Refuse a name that is neither a preset nor a zoo model (see :func:`unknown_model`)."""
    from memx.models.registry import presets

    if not isinstance(name, str) or not (is_zoo(name) or any(p.name == name for p in presets())):
        raise unknown_model(name)
