"""Rebuild a zoo checkpoint: `python -m memx.zoo.make NAME` (deterministic)."""

from __future__ import annotations

import sys

from memx.models import build_model
from memx.training import TrainConfig, train
from memx.zoo import get_zoo


def make(name: str) -> None:
    entry = get_zoo(name)
    model = build_model(entry.family, entry.config, seed=entry.train.get("seed", 0))
    cfg = TrainConfig(task=entry.task, segment_len=entry.segment_len, eval_every=500, eval_batches=8, **entry.train)
    result = train(model, cfg, out=entry.checkpoint)
    entry.checkpoint.with_suffix(".optim.pt").unlink(missing_ok=True)  # ship weights and history only
    print(f"{name}: step {result.step}, accuracy {result.accuracy:.3f} (chance {entry.chance})")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        make(arg)
