"""Synthetic long-input tasks from the seed papers, generated on the fly from a seed.

Every task yields an :class:`Episode`: one token stream per row and a target per position
(``IGNORE`` where nothing is predicted). Streams are cut into segments of ``segment_len``
tokens, so the answer needs information from earlier segments, carried by the memory.
Tasks are decoder-style: the target at position t is what the model should output
there (teacher forcing: the answer's tokens are in the input, shifted by one).

Answer formats: most tasks write ``prompt, SEP, answer`` and score the answer from the SEP
position on; associative retrieval scores the value at the queried key's own position (the
MQAR format: one lookup, no extra hop through SEP; see docs/zoo.md for why this matters).

Vocabulary layout (shared): 0 = PAD, 1 = SEP (start of answer), 2 = QUERY; task symbols from 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from memx.registry import Registry

PAD, SEP, QUERY = 0, 1, 2
FIRST_SYMBOL = 3
IGNORE = -100


@dataclass(frozen=True)
class Episode:
    tokens: np.ndarray  # (B, T) int64
    targets: np.ndarray  # (B, T) int64, IGNORE where no prediction is scored
    segment_len: int

    @property
    def n_segments(self) -> int:
        return -(-self.tokens.shape[1] // self.segment_len)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    vocab_size: int  # tokens the task uses (a model's vocabulary must be at least this)
    make: Callable[[np.random.Generator, int, int], Episode]  # (rng, batch, segment_len)


_TASKS: Registry[Task] = Registry("task")


def register_task(name: str, description: str, vocab_size: int) -> Callable:
    def wrap(fn: Callable[[np.random.Generator, int, int], Episode]) -> Callable:
        _TASKS.add(name, Task(name, description, vocab_size, fn))
        return fn

    return wrap


def tasks() -> list[Task]:
    return list(_TASKS.values())


def get_task(name: str) -> Task:
    return _TASKS.get(name)


def _answer_episode(prompt: np.ndarray, answer: np.ndarray, segment_len: int) -> Episode:
    """tokens = prompt, SEP, answer[:-1] ; targets score answer right after SEP. Padded to whole segments."""
    b = prompt.shape[0]
    tokens = np.concatenate([prompt, np.full((b, 1), SEP), answer[:, :-1]], axis=1)
    targets = np.full_like(tokens, IGNORE)
    targets[:, prompt.shape[1] :] = answer  # position of SEP predicts answer[0], and so on
    return _padded(tokens, targets, segment_len)


def _padded(tokens: np.ndarray, targets: np.ndarray, segment_len: int) -> Episode:
    """Pad (B, T) tokens and targets to whole segments."""
    pad = (-tokens.shape[1]) % segment_len
    tokens = np.pad(tokens, ((0, 0), (0, pad)), constant_values=PAD)
    targets = np.pad(targets, ((0, 0), (0, pad)), constant_values=IGNORE)
    return Episode(tokens.astype(np.int64), targets.astype(np.int64), segment_len)


N_SYMBOLS = 10
SOURCE_LEN = 24  # the RMT paper's source length
SHORT_SOURCE_LEN = 8  # the short variants: with segments of 8, the source fills segment 1 and the answer segment 2


def _source(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    return rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + N_SYMBOLS, size=(batch, length))


@register_task("copy", "copy: 24 symbols, then the source twice (RMT paper)", FIRST_SYMBOL + N_SYMBOLS)
def copy_task(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    src = _source(rng, batch, SOURCE_LEN)
    return _answer_episode(src, np.concatenate([src, src], axis=1), segment_len)


@register_task("reverse", "reverse: 24 symbols, then them reversed (RMT paper)", FIRST_SYMBOL + N_SYMBOLS)
def reverse_task(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    src = _source(rng, batch, SOURCE_LEN)
    return _answer_episode(src, src[:, ::-1], segment_len)


@register_task("copy-8", "copy: 8 symbols, then the source once (the RMT paper's copy, shortened)", FIRST_SYMBOL + N_SYMBOLS)
def copy_short(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    src = _source(rng, batch, SHORT_SOURCE_LEN)
    return _answer_episode(src, src, segment_len)


@register_task("reverse-8", "reverse: 8 symbols, then them reversed (the RMT paper's reverse, shortened)", FIRST_SYMBOL + N_SYMBOLS)
def reverse_short(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    src = _source(rng, batch, SHORT_SOURCE_LEN)
    return _answer_episode(src, src[:, ::-1], segment_len)


N_KEYS, N_VALUES, N_PAIRS = 26, 10, 4
KEY0 = FIRST_SYMBOL + N_VALUES


@register_task("associative-retrieval", "4 key->value pairs, then QUERY and a key: its value, predicted at the key (RMT paper)", KEY0 + N_KEYS)
def associative_retrieval(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    keys = np.stack([rng.choice(N_KEYS, size=N_PAIRS, replace=False) for _ in range(batch)]) + KEY0
    values = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + N_VALUES, size=(batch, N_PAIRS))
    pairs = np.stack([keys, values], axis=2).reshape(batch, 2 * N_PAIRS)  # k1 v1 k2 v2 ...
    rows, which = np.arange(batch), rng.integers(0, N_PAIRS, size=batch)
    tokens = np.concatenate([pairs, np.full((batch, 1), QUERY), keys[rows, which][:, None]], axis=1)  # (B, 2K+2)
    targets = np.full_like(tokens, IGNORE)
    targets[:, -1] = values[rows, which]  # the key's own position predicts its value (no SEP hop)
    return _padded(tokens, targets, segment_len)


MAJORITY_LEN, MAJORITY_SYMBOLS = 64, 5


@register_task("majority", "64 symbols of 5 kinds: answer the most frequent one (GMAT-style)", FIRST_SYMBOL + MAJORITY_SYMBOLS)
def majority_task(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    weights = rng.dirichlet(np.ones(MAJORITY_SYMBOLS), size=batch)
    seq = np.stack([rng.choice(MAJORITY_SYMBOLS, size=MAJORITY_LEN, p=w) for w in weights])
    counts = np.stack([np.bincount(row, minlength=MAJORITY_SYMBOLS) for row in seq])
    answer = counts.argmax(axis=1)  # ties go to the smallest symbol
    return _answer_episode(seq + FIRST_SYMBOL, (answer + FIRST_SYMBOL)[:, None], segment_len)


SORT_LEN, SORT_SYMBOLS = 96, 8


@register_task("frequency-sort", "96 symbols with a drifting distribution: list the 8 symbols by descending count (inf-former)", FIRST_SYMBOL + SORT_SYMBOLS)
def frequency_sort(rng: np.random.Generator, batch: int, segment_len: int) -> Episode:
    rows, answers = [], []
    for _ in range(batch):
        p0, p1 = rng.integers(1, 10, size=SORT_SYMBOLS), rng.integers(1, 10, size=SORT_SYMBOLS)  # weights 1-9
        mix = np.linspace(0.0, 1.0, SORT_LEN)[:, None]
        probs = (1 - mix) * p0 / p0.sum() + mix * p1 / p1.sum()  # (T, K): interpolated distribution
        seq = np.array([rng.choice(SORT_SYMBOLS, p=p) for p in probs])
        counts = np.bincount(seq, minlength=SORT_SYMBOLS)
        rows.append(seq)
        answers.append(np.lexsort((np.arange(SORT_SYMBOLS), -counts)))  # by count desc, then symbol
    return _answer_episode(np.stack(rows) + FIRST_SYMBOL, np.stack(answers) + FIRST_SYMBOL, segment_len)


def prompt_and_answer(episode: Episode, row: int) -> tuple[np.ndarray, np.ndarray]:
    """One item as a generation problem: the tokens up to the position that predicts the first
    answer token (SEP, or the queried key), and the answer tokens that follow, in order."""
    scored = np.flatnonzero(episode.targets[row] != IGNORE)
    first = int(scored[0])
    return episode.tokens[row, : first + 1].copy(), episode.targets[row, scored].copy()


def answers_after_sep(task_name: str) -> bool:
    """Whether the task's answer follows SEP (copy, reverse, majority, sort), so it can be
    generated from the prompt; associative retrieval answers at the queried key instead."""
    prompt, _ = prompt_and_answer(get_task(task_name).make(np.random.default_rng(0), 1, 1), 0)
    return int(prompt[-1]) == SEP
