"""Scoring a task's answers: which input tokens a non-causal model must not see, and how
many items and tokens a prediction got right (the trainer and ``memx.validation.accuracy``
score alike)."""

from __future__ import annotations

import numpy as np

from memx.training.tasks import IGNORE, PAD


def blank_answers(tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-causal models must not read the answer they predict (teacher-forced answer tokens)."""
    answer_input = np.zeros_like(targets, dtype=bool)
    answer_input[:, 1:] = targets[:, :-1] != IGNORE  # token t is the answer scored at t-1
    return np.where(answer_input, PAD, tokens)


def count_correct(preds: np.ndarray, targets: np.ndarray) -> tuple[int, int, int]:
    """(items with every scored token right, scored tokens right, scored tokens) for (B, T) arrays."""
    scored = targets != IGNORE
    hit = preds == targets
    return int((hit | ~scored).all(axis=1).sum()), int((hit & scored).sum()), int(scored.sum())
