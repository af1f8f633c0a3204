"""Synthetic tasks: right answers, in-vocabulary tokens, deterministic from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from memx.errors import RegistryError
from memx.training.tasks import FIRST_SYMBOL, IGNORE, QUERY, SEP, get_task, prompt_and_answer, tasks

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
    for row in range(4):
        prompt, answer = prompt_and_answer(a, row)
        assert prompt[-1] == SEP or name == "associative-retrieval", "the SEP position predicts the first answer token"
        scored = np.flatnonzero(a.targets[row] != IGNORE)
        assert np.array_equal(scored, np.arange(len(prompt) - 1, len(prompt) - 1 + len(answer))), "answers are scored contiguously"
        assert np.array_equal(a.tokens[row, scored[1:]], answer[:-1]), "teacher forcing: each answer token is the next input"


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
    assert ep.tokens[0, 8] == QUERY and ep.targets[0, 9] == pairs[pairs[:, 0] == key, 1][0], "the value is scored at the queried key"
    assert ep.n_segments == 2 and (ep.targets[:, :8] == IGNORE).all(), "segments of 8: pairs in segment 1, the query in segment 2"
    for name, expect in (("copy-8", lambda s: s), ("reverse-8", lambda s: s[::-1])):
        ep = get_task(name).make(rng, 2, 8)
        src = ep.tokens[0, :8]
        assert ep.tokens[0, 8] == SEP and ep.n_segments == 2
        np.testing.assert_array_equal(_answer(ep, 0), expect(src))
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
