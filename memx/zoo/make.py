"""Rebuild a zoo checkpoint: `python -m memx.zoo.make NAME` (deterministic)."""

from __future__ import annotations

import sys

from memx.errors import MemxError
from memx.models import build_model
from memx.training import TrainConfig, train
from memx.zoo import get_zoo


def make(name: str) -> None:
    import torch

    torch.set_num_threads(1)  # the same arithmetic, so the same checkpoint, on every machine
    entry = get_zoo(name)
    model = build_model(entry.family, entry.config, seed=entry.train.get("seed", 0))
    cfg = TrainConfig(task=entry.task, segment_len=entry.segment_len, **{"eval_every": 500, "eval_batches": 8, **entry.train})
    result = train(model, cfg, out=entry.checkpoint)
    entry.checkpoint.with_suffix(".optim.pt").unlink(missing_ok=True)  # ship weights and history only
    if not result.finished_curriculum(cfg):
        raise MemxError(f"{name}: the curriculum stopped at segments of {result.segment_len}", expected=f"segments of {entry.segment_len}",
                        actual=f"accuracy {result.accuracy:.3f} < {cfg.curriculum_threshold} at segments of {result.segment_len}",
                        hint="raise steps or lower curriculum_threshold in memx/models/zoo_entries.py")
    print(f"{name}: step {result.step}, accuracy {result.accuracy:.3f} (chance {entry.chance})")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        make(arg)
