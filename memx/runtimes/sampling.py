"""Choosing the next token from logits: greedy, temperature, top-k, top-p; deterministic for a
seed and the same in Python and C++ (cpp/runtime/src/sampling.cc).

The random numbers come from SplitMix64 (one 64-bit state per row, seeded with the row's
seed); a uniform draw is the top 53 bits over 2^53. Sampling works in float64 in a fixed
order: candidates sorted by logit (ties: lower id first), cut to top_k, probabilities
exp((x - max) / T) summed in that order, cut to the smallest prefix whose mass reaches top_p,
and the token is the first whose running sum exceeds u times the kept mass. ``math.exp`` and
C++'s ``std::exp`` are the C library's exp, so both sides compute the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memx.errors import InputError

MASK64 = (1 << 64) - 1


class SplitMix64:
    """The SplitMix64 generator (Steele, Lea & Flood 2014): 64-bit state, one add and a mix per draw."""

    def __init__(self, seed: int):
        self.state = int(seed) & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A double in [0, 1) from the top 53 bits."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class SamplingOptions:
    """temperature 0 is greedy (argmax, lowest id on ties); top_k 0 keeps every token; top_p 1 keeps all mass."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError("temperature must be a finite number >= 0", expected=">= 0 (0: greedy)", actual=repr(self.temperature))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise InputError("top_k must be an int >= 0", expected=">= 0 (0: no cut)", actual=repr(self.top_k))
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]", expected="0 < top_p <= 1", actual=repr(self.top_p))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample(logits: np.ndarray, options: SamplingOptions, rng: SplitMix64) -> int:
    """One token id from logits (V,). Greedy draws no random number."""
    if options.greedy:
        return int(np.argmax(logits))  # the first maximum
    x = logits.astype(np.float64)
    order = np.argsort(-x, kind="stable")  # by logit, ties by id
    if options.top_k:
        order = order[: options.top_k]
    values = x[order].tolist()
    top, t = values[0], float(options.temperature)
    probs = [math.exp((v - top) / t) for v in values]
    total = 0.0
    for p in probs:
        total += p
    kept, mass = len(probs), 0.0
    if options.top_p < 1:
        for i, p in enumerate(probs):  # the smallest prefix whose mass reaches top_p
            mass += p
            if mass >= options.top_p * total:
                kept = i + 1
                break
    mass = 0.0
    for p in probs[:kept]:
        mass += p
    target = rng.uniform() * mass
    running = 0.0
    for i in range(kept):
        running += probs[i]
        if running > target:
            return int(order[i])
    return int(order[kept - 1])  # rounding left the target at the very end


def row_rngs(seed: Any, batch: int) -> list[SplitMix64]:
    """One generator per row: row b starts from seed + b (seed None: 0)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputError("seed must be an int", expected="an int (or None for 0)", actual=repr(seed))
    base = 0 if seed is None else int(seed)
    return [SplitMix64(base + b) for b in range(batch)]
