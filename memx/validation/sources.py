"""Token streams to roll a package over: a user's token file or texts, a zoo task's
episodes, or random tokens. Validation (drift, accuracy) streams them through candidate and
reference alike, and calibration records the fp32 package's inputs on them
(``memx.calibration.feeds``)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from memx.errors import CalibrationError
from memx.package.files import Package

class TokenSource(ABC):
    """Where calibration (and evaluation) streams come from."""

    name: str = "tokens"

    @abstractmethod
    def streams(self, n_streams: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """(n_streams, n_tokens) int64 token ids, one continuous stream per row."""

    def describe(self) -> str:
        return self.name


def _check_token_array(tokens: np.ndarray, vocab_size: int, where: str) -> np.ndarray:
    if tokens.dtype.kind not in "iu":
        raise CalibrationError(f"calibration tokens in {where} must be integers", expected="an integer array", actual=str(tokens.dtype))
    if tokens.size == 0:
        raise CalibrationError(f"calibration tokens in {where} are empty", expected="at least one segment of tokens", actual=list(tokens.shape))
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise CalibrationError(f"calibration tokens in {where} are outside the vocabulary", expected=f"ids in 0..{vocab_size - 1}", actual=f"ids in {lo}..{hi}")
    return tokens.astype(np.int64)


class ArraySource(TokenSource):
    """Token ids in memory: 1-D (one long text, cut into ``n_streams`` contiguous pieces) or
    2-D (one stream per row, rows reused cyclically)."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, *, name: str = "array"):
        arr = np.asarray(tokens)
        if arr.ndim not in (1, 2):
            raise CalibrationError(f"calibration tokens ({name}) must be 1-D or 2-D", expected="(T,) or (N, T)", actual=list(arr.shape))
        self.tokens = _check_token_array(arr, vocab_size, name)
        self.name = name

    def streams(self, n_streams: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        if self.tokens.ndim == 1:
            piece = self.tokens.shape[0] // n_streams
            if piece < 1:
                raise CalibrationError(f"calibration text ({self.name}) is too short for {n_streams} streams", expected=f">= {n_streams} tokens", actual=self.tokens.shape[0])
            rows = self.tokens[: piece * n_streams].reshape(n_streams, piece)  # (T,) -> (n_streams, piece)
        else:
            rows = self.tokens[np.arange(n_streams) % self.tokens.shape[0]]
        if rows.shape[1] < n_tokens:  # wrap around: a stream longer than the data repeats it
            rows = np.tile(rows, (1, -(-n_tokens // rows.shape[1])))
        return rows[:, :n_tokens]

    def describe(self) -> str:
        return f"{self.name} ({self.tokens.size} tokens)"


def load_token_file(path: str | os.PathLike, vocab_size: int) -> ArraySource:
    """Tokens from .npy (one array) or .npz (the array named ``tokens``, else the only one)."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError("calibration file not found", expected="an existing .npy or .npz file", actual=str(p))
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if "tokens" in keys:
                    arr = z["tokens"]
                elif len(keys) == 1:
                    arr = z[keys[0]]
                else:
                    raise CalibrationError("calibration .npz has several arrays and none named 'tokens'", expected="an array named 'tokens'", actual=keys)
        else:
            raise CalibrationError("calibration data must be a token array file", expected=".npy or .npz", actual=p.suffix or p.name)
    except (ValueError, OSError) as e:
        raise CalibrationError(f"cannot read calibration file {p.name}: {e}") from None
    return ArraySource(arr, vocab_size, name=p.name)


class TextSource(ArraySource):
    """Texts through the user's tokenizer (any callable str -> list of ids), concatenated."""

    def __init__(self, texts: Iterable[str], tokenizer: Callable[[str], Any], vocab_size: int):
        ids = [np.asarray(tokenizer(t), dtype=np.int64).reshape(-1) for t in texts]
        if not ids:
            raise CalibrationError("no calibration texts given", expected="at least one text", actual=0)
        super().__init__(np.concatenate(ids), vocab_size, name="texts")


class TaskSource(TokenSource):
    """A zoo task's episodes, back to back in each stream (no reset between them), answers
    blanked for non-causal models as in evaluation."""

    def __init__(self, task: str, segment_len: int, *, causal: bool, vocab_size: int):
        from memx.training.tasks import get_task

        self.task = get_task(task)
        if self.task.vocab_size > vocab_size:
            raise CalibrationError(f"task {task!r} uses more tokens than the model's vocabulary", expected=f"<= {vocab_size}", actual=self.task.vocab_size)
        self.segment_len, self.causal, self.name = segment_len, causal, f"task {task}"

    def streams(self, n_streams: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        from memx.training.accuracy import blank_answers

        parts, have = [], 0
        while have < n_tokens:
            ep = self.task.make(rng, n_streams, self.segment_len)
            parts.append(ep.tokens if self.causal else blank_answers(ep.tokens, ep.targets))
            have += ep.tokens.shape[1]
        return np.concatenate(parts, axis=1)[:, :n_tokens]


class RandomSource(TokenSource):
    """Uniform random tokens: ranges that may not match real data (a warning says so)."""

    name = "random tokens"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def streams(self, n_streams: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.vocab_size, size=(n_streams, n_tokens), dtype=np.int64)


def default_source(pkg: Package, segment_len: int) -> tuple[TokenSource, str | None]:
    """The task the package's model was trained on, else random tokens with a warning."""
    m = pkg.manifest
    if m.task:
        return TaskSource(m.task, segment_len, causal=m.causal, vocab_size=m.vocab_size), None
    warning = ("no calibration data given and the package names no task: calibrating on random-token rollouts, "
               "whose activation ranges may differ from real data (pass --calib FILE.npy or --task NAME)")
    return RandomSource(m.vocab_size), warning
