"""Synthetic tasks: right answers, in-vocabulary tokens, deterministic from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from memx.errors import RegistryError
from memx.training.tasks import FIRST_SYMBOL, IGNORE, SEP, get_task, tasks

TASKS = [t.name for t in tasks()]


@pytest.mark.parametrize("name", TASKS)
def test_episodes_are_deterministic_in_vocab_and_segmented(name):
    task = get_task(name)
    a = task.make(np.random.default_rng(5), 4, 8)
    b = task.make(np.random.default_rng(5), 4, 8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == a.targets.shape and a.tokens.shape[1] % 8 == 0
    assert a.tokens.min() >= 0 and a.tokens.max() < task.vocab_size
    scored = a.targets[a.targets != IGNORE]
    assert scored.size and scored.min() >= FIRST_SYMBOL and scored.max() < task.vocab_size
    assert a.n_segments >= 2, "the answer must need memory of an earlier segment"
    sep = np.argmax(a.tokens == SEP, axis=1)
    assert (a.targets[np.arange(4), sep] != IGNORE).all(), "the SEP position predicts the first answer token"


def _answer(ep, row):
    return ep.targets[row][ep.targets[row] != IGNORE]


def test_answers_are_right():
    rng = np.random.default_rng(1)
    ep = get_task("copy").make(rng, 2, 8)
    src = ep.tokens[0, :24]
    np.testing.assert_array_equal(_answer(ep, 0), np.concatenate([src, src]))
    ep = get_task("reverse").make(rng, 2, 8)
    np.testing.assert_array_equal(_answer(ep, 0), ep.tokens[0, :24][::-1])
    ep = get_task("associative-retrieval").make(rng, 2, 8)
    pairs, key = ep.tokens[0, :8].reshape(4, 2), ep.tokens[0, 9]
    assert _answer(ep, 0)[0] == pairs[pairs[:, 0] == key, 1][0]
    ep = get_task("majority").make(rng, 2, 8)
    seq = ep.tokens[0, :64]
    counts = np.bincount(seq - FIRST_SYMBOL, minlength=5)
    assert _answer(ep, 0)[0] - FIRST_SYMBOL == np.argmax(counts)
    ep = get_task("frequency-sort").make(rng, 2, 8)
    counts = np.bincount(ep.tokens[0, :96] - FIRST_SYMBOL, minlength=8)
    order = _answer(ep, 0) - FIRST_SYMBOL
    assert sorted(order.tolist()) == list(range(8)) and (np.diff(counts[order]) <= 0).all()


def test_unknown_task():
    with pytest.raises(RegistryError, match="copy"):
        get_task("sudoku")
