"""Generation: tokens appended one (or a few) at a time inside a segment, memory written at
segment boundaries (DESIGN.md §8, issue 19).

The engine here is shared by Stream and StreamPool; it works on host arrays of B rows:

- the step state (B, ...) per state tensor and the rows still waiting for their reset;
- ``DecodeRows``: per row the decode cache, the tokens of its current segment (the token
  buffer, ``capacity`` wide), how many it holds (``position``) and the logits for its next
  token.

``append_rows`` consumes each row's new tokens: a row at the start of a segment with at least
a whole segment to consume runs it through the step graph (logits and memory in one call);
otherwise its tokens go through the decode graph into the cache (``decode_open`` first when
the row starts a segment). A row whose segment is full is committed: the step graph runs on
its buffered tokens and only then is its memory written, so decoding a segment token by token
and committing equals one step over it. Rows are batched: one step call and one decode call
per round, rows that have nothing to do in a call are left out of it.

Every function returns new arrays and leaves its inputs alone: a caller makes a failed
append all-or-nothing by keeping what it had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memx.errors import BackendUnavailableError, InputError
from memx.package.manifest import DecodeInfo, Manifest

DECODE_PREFIX = "decode."  # snapshot tensors of a generating stream: decode.position, decode.tokens, decode.logits, decode.has_logits, decode.cache.<name>


def decode_info(manifest: Manifest) -> DecodeInfo:
    """The package's decode graphs, or a typed error saying why it has none."""
    if manifest.decode is None:
        why = "it is not causal (a token's output depends on later tokens of its segment)" if not manifest.causal else \
            "it was exported without them (memx export --no-decode, an older memx, or a family without decode graphs)"
        raise BackendUnavailableError(f"this {manifest.family} package has no decode graphs, so it cannot generate token by token: {why}",
                                      expected="a package with decode graphs (memx inspect shows them)", actual="none",
                                      hint="re-export a causal model with this memx (rmt decoder, kvcache, gmat causal, infformer)")
    return manifest.decode


def put(arr: np.ndarray, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``arr`` with rows ``idx`` replaced by ``values``, as a new array (copy on write): arrays
    are never written in place, so a shallow copy of a dict of them is a snapshot of it."""
    if len(idx) == len(arr) and (idx == np.arange(len(arr))).all():
        values = np.asarray(values, dtype=arr.dtype)
        return np.ascontiguousarray(values) if values.shape == arr.shape else np.broadcast_to(values, arr.shape).copy()
    out = arr.copy()
    out[idx] = values
    return out


@dataclass
class DecodeRows:
    """Generation state of B rows (host arrays, batch axis 0)."""

    cache: dict[str, np.ndarray]  # decode cache tensors by cache name
    tokens: np.ndarray  # int64 (B, capacity): the current segment's tokens
    position: np.ndarray  # int64 (B,): tokens in the current segment
    logits: np.ndarray  # float32 (B, V): logits of each row's next token
    has_logits: np.ndarray  # bool (B,): the row has appended tokens (logits are meaningful)

    @classmethod
    def empty(cls, info: DecodeInfo, vocab_size: int, batch: int) -> "DecodeRows":
        cache = {c.name: np.zeros((batch, *c.shape[1:]), dtype=c.dtype) for c in info.cache}
        return cls(cache, np.zeros((batch, info.capacity), np.int64), np.zeros(batch, np.int64), np.zeros((batch, vocab_size), np.float32), np.zeros(batch, bool))

    def take(self, rows: np.ndarray) -> "DecodeRows":
        """Copies of the given rows (an index array)."""
        return DecodeRows({k: v[rows] for k, v in self.cache.items()}, self.tokens[rows], self.position[rows], self.logits[rows], self.has_logits[rows])

    def put(self, rows: np.ndarray, part: "DecodeRows") -> None:
        """Replace rows ``rows`` by ``part``'s (new arrays: copy on write)."""
        self.cache = {k: put(v, rows, part.cache[k]) for k, v in self.cache.items()}
        self.tokens, self.position = put(self.tokens, rows, part.tokens), put(self.position, rows, part.position)
        self.logits, self.has_logits = put(self.logits, rows, part.logits), put(self.has_logits, rows, part.has_logits)

    def shallow(self) -> "DecodeRows":
        """A copy sharing the (never written in place) arrays."""
        return DecodeRows(dict(self.cache), self.tokens, self.position, self.logits, self.has_logits)

    @classmethod
    def stack(cls, parts: list["DecodeRows"]) -> "DecodeRows":
        """Rows of several (batch-1) streams as one batch."""
        cat = lambda get: np.concatenate([get(p) for p in parts])  # noqa: E731
        return cls({k: cat(lambda p: p.cache[k]) for k in parts[0].cache}, cat(lambda p: p.tokens), cat(lambda p: p.position), cat(lambda p: p.logits),
                   cat(lambda p: p.has_logits))

    def clear(self, rows: np.ndarray) -> None:
        """Rows start over: empty segment, no logits (their cache is re-opened before use)."""
        self.position = put(self.position, rows, 0)
        self.has_logits = put(self.has_logits, rows, False)
        self.tokens = put(self.tokens, rows, 0)

    # --- snapshots: the generation state travels as extra tensors of the stream's snapshot ---
    def to_tensors(self) -> dict[str, np.ndarray]:
        out = {f"{DECODE_PREFIX}position": self.position, f"{DECODE_PREFIX}tokens": self.tokens, f"{DECODE_PREFIX}logits": self.logits,
               f"{DECODE_PREFIX}has_logits": self.has_logits}
        out.update({f"{DECODE_PREFIX}cache.{k}": v for k, v in self.cache.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "DecodeRows":
        cache = {k[len(DECODE_PREFIX) + 6 :]: v for k, v in tensors.items() if k.startswith(f"{DECODE_PREFIX}cache.")}
        return cls(cache, tensors[f"{DECODE_PREFIX}tokens"], tensors[f"{DECODE_PREFIX}position"], tensors[f"{DECODE_PREFIX}logits"], tensors[f"{DECODE_PREFIX}has_logits"])


def decode_schema(info: DecodeInfo, vocab_size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """What a generating stream's snapshot holds beyond its state: (shape without batch, dtype)."""
    schema = {f"{DECODE_PREFIX}position": ((), "int64"), f"{DECODE_PREFIX}tokens": ((info.capacity,), "int64"),
              f"{DECODE_PREFIX}logits": ((vocab_size,), "float32"), f"{DECODE_PREFIX}has_logits": ((), "bool")}
    schema.update({f"{DECODE_PREFIX}cache.{c.name}": (tuple(int(d) for d in c.shape[1:]), c.dtype) for c in info.cache})
    return schema


def check_segment_len(segment_len: Any, info: DecodeInfo) -> int:
    """The generation segment length: tokens a segment holds before its memory is written."""
    if segment_len is None:
        return info.capacity
    if isinstance(segment_len, bool) or not isinstance(segment_len, (int, np.integer)) or not 1 <= int(segment_len) <= info.capacity:
        raise InputError("generation segment length out of range", expected=f"an int in 1..{info.capacity} (the decode cache's capacity)", actual=repr(segment_len))
    return int(segment_len)


def check_new_tokens(tokens: Any, *, batch: int, vocab_size: int, name: str = "tokens") -> np.ndarray:
    """Tokens to append: (n,) for one row or (B, n), n >= 1, ids in the vocabulary -> int64 (B, n)."""
    from memx.runtimes.inputs import check_tokens

    arr = np.asarray(tokens) if not hasattr(tokens, "shape") else tokens
    if getattr(arr, "ndim", 0) >= 1 and arr.shape[-1] == 0:
        raise InputError(f"{name} is empty: nothing to append", expected="at least one token", actual=f"shape {list(arr.shape)}")
    return check_tokens(arr, batch=batch, vocab_size=vocab_size, segment={"min": 1, "max": 1 << 62})


class Generator:
    """Runs the decode and step graphs of one Runtime for batches of rows (host arrays)."""

    def __init__(self, runtime: Any):  # a memx.runtimes.base.Runtime
        self.runtime = runtime
        self.info = decode_info(runtime.manifest)
        self.open_graph, self.decode_graph = self.info.graph("decode_open"), self.info.graph("decode")
        self._state_inputs = {s.name: s.input for s in runtime.manifest.state}

    # --- the two decode graphs ---------------------------------------------------------------
    def open_feeds(self, reset: np.ndarray, states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs of ``decode_open`` for rows (B,) of ``states`` (by state name)."""
        inputs = {s.input: np.ascontiguousarray(states[s.name]) for s in self.runtime.manifest.state}
        return {t.name: (reset if t.name == "reset" else inputs[t.name]) for t in self.open_graph.inputs}

    def decode_feeds(self, tokens: np.ndarray, lengths: np.ndarray, position: np.ndarray, cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs of ``decode``: new tokens (B, n), how many of them are real (B,), where they go (B,), the cache by name."""
        return {"tokens": tokens, "lengths": lengths, "position": position, **{c.input: np.ascontiguousarray(cache[c.name]) for c in self.info.cache}}

    def open(self, reset: np.ndarray, states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cache entries ``decode_open`` writes, for rows (B,) of ``states``."""
        out = self.runtime.run_graph(self.open_graph, self.open_feeds(reset, states))
        return {c.name: out[c.output] for c in self.info.cache if c.graph == "decode_open"}

    def decode(self, tokens: np.ndarray, lengths: np.ndarray, position: np.ndarray, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """logits (B, n, V) of the new tokens and the cache entries ``decode`` writes."""
        out = self.runtime.run_graph(self.decode_graph, self.decode_feeds(tokens, lengths, position, cache))
        return out["logits"], {c.name: out[c.output] for c in self.info.cache if c.graph == "decode"}

    # --- appending ------------------------------------------------------------------------------
    def append_rows(self, states: dict[str, np.ndarray], pending: np.ndarray, rows: DecodeRows, tokens: np.ndarray, counts: np.ndarray,
                    segment_len: int) -> tuple[dict[str, np.ndarray], np.ndarray, DecodeRows, np.ndarray]:
        """Append ``counts[b]`` tokens of ``tokens[b]`` (B, n) to each row. Returns new (states,
        pending, rows, committed segments per row); the arguments are left as they were."""
        states, pending, rows = dict(states), pending.copy(), rows.shallow()  # arrays are replaced, never written: the caller's stay as they were
        committed = np.zeros(len(counts), np.int64)
        done = np.zeros(len(counts), np.int64)
        while (done < counts).any():
            left = counts - done
            whole = (rows.position == 0) & (left >= segment_len)  # a whole segment: the step graph writes logits and memory at once
            part = (left > 0) & ~whole
            if whole.any():
                self._step_whole(np.flatnonzero(whole), states, pending, rows, tokens, done, segment_len)
                committed[whole] += 1
                done[whole] += segment_len
            if part.any():
                idx = np.flatnonzero(part)
                take = np.minimum(segment_len - rows.position[idx], left[idx])
                self._decode_part(idx, states, pending, rows, tokens, done[idx], take)
                done[idx] += take
                full = idx[rows.position[idx] == segment_len]
                if len(full):
                    self._commit(full, states, pending, rows, segment_len)
                    committed[full] += 1
        return states, pending, rows, committed

    def _step_whole(self, idx: np.ndarray, states: dict[str, np.ndarray], pending: np.ndarray, rows: DecodeRows, tokens: np.ndarray, done: np.ndarray,
                    segment_len: int) -> None:
        seg = np.stack([tokens[b, done[b] : done[b] + segment_len] for b in idx])  # (k, G)
        lengths = np.full(len(idx), segment_len, np.int64)
        outputs, new = self.runtime.run_step(seg, lengths, pending[idx], {k: v[idx] for k, v in states.items()})
        for k, v in new.items():
            states[k] = put(states[k], idx, v)
        pending[idx] = False
        rows.logits = put(rows.logits, idx, outputs["logits"][:, -1])
        rows.has_logits = put(rows.has_logits, idx, True)
        rows.position = put(rows.position, idx, 0)

    def _decode_part(self, idx: np.ndarray, states: dict[str, np.ndarray], pending: np.ndarray, rows: DecodeRows, tokens: np.ndarray, start: np.ndarray,
                     take: np.ndarray) -> None:
        every = len(idx) == len(rows.position)
        part = rows.shallow() if every else rows.take(idx)
        opening = np.flatnonzero(part.position == 0)
        if len(opening):  # rows starting a segment read their memory now
            sub = idx[opening]
            opened = self.open(pending[sub], {k: v[sub] for k, v in states.items()})
            part.cache.update({k: put(part.cache[k], opening, v) for k, v in opened.items()})
        n = int(take.max())
        if every and (take == n).all() and (start == start[0]).all():
            new = np.ascontiguousarray(tokens[:, start[0] : start[0] + n])  # (B, n): every row takes the same tokens span
        else:
            new = np.zeros((len(idx), n), np.int64)  # (k, n) padded with token 0
            for r, b in enumerate(idx):
                new[r, : take[r]] = tokens[b, start[r] : start[r] + take[r]]
        position = part.position
        logits, written = self.decode(new, take.astype(np.int64), position, part.cache)
        part.cache.update(written)
        part.tokens = part.tokens.copy()
        for r in range(len(idx)):
            part.tokens[r, position[r] : position[r] + take[r]] = new[r, : take[r]]
        part.logits = np.ascontiguousarray(logits[np.arange(len(idx)), take - 1])
        part.position = position + take
        part.has_logits = np.ones(len(idx), bool)
        if every:
            rows.cache, rows.tokens, rows.position, rows.logits, rows.has_logits = part.cache, part.tokens, part.position, part.logits, part.has_logits
        else:
            rows.put(idx, part)

    def _commit(self, idx: np.ndarray, states: dict[str, np.ndarray], pending: np.ndarray, rows: DecodeRows, segment_len: int) -> None:
        """Rows whose segment is full: the step graph writes their memory from the buffered tokens."""
        lengths = np.full(len(idx), segment_len, np.int64)
        _, new = self.runtime.run_step(np.ascontiguousarray(rows.tokens[idx, :segment_len]), lengths, pending[idx], {k: v[idx] for k, v in states.items()})
        for k, v in new.items():
            states[k] = put(states[k], idx, v)
        pending[idx] = False
        rows.position = put(rows.position, idx, 0)

    def flush_rows(self, states: dict[str, np.ndarray], pending: np.ndarray, rows: DecodeRows) -> tuple[dict[str, np.ndarray], np.ndarray, DecodeRows, np.ndarray]:
        """Write the memory of every row's partial segment now (a shorter last segment); rows
        with an empty segment are unchanged. Returns new (states, pending, rows, committed)."""
        states, pending, rows = dict(states), pending.copy(), rows.shallow()
        idx = np.flatnonzero(rows.position > 0)
        committed = np.zeros(len(pending), np.int64)
        if len(idx):
            width = int(rows.position[idx].max())
            _, new = self.runtime.run_step(np.ascontiguousarray(rows.tokens[idx, :width]), rows.position[idx].copy(), pending[idx], {k: v[idx] for k, v in states.items()})
            for k, v in new.items():
                states[k] = put(states[k], idx, v)
            pending[idx] = False
            rows.position = put(rows.position, idx, 0)
            committed[idx] = 1
        return states, pending, rows, committed


def check_max_new_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError("max_new_tokens must be an int >= 0", expected=">= 0", actual=repr(value))
    return int(value)


def check_stop_tokens(value: Any, vocab_size: int) -> frozenset[int]:
    """Stop token ids: an int or an iterable of ints in the vocabulary."""
    items = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else list(value)
    for t in items:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < vocab_size:
            raise InputError("stop token outside the vocabulary", expected=f"ints in 0..{vocab_size - 1}", actual=repr(t))
    return frozenset(int(t) for t in items)


def split_snapshot(blob: bytes, manifest: Manifest, *, model_id: str, batch: int | None,
                   schema: dict[str, tuple[tuple[int, ...], str]]) -> tuple[Any, dict[str, np.ndarray] | None]:
    """Decode a stream snapshot: its state alone, or its state and a generating stream's
    ``decode.*`` tensors (checked against the package's decode schema). Returns
    (SnapshotData of the state, decode tensors or None); refuses anything else."""
    from memx.errors import SnapshotMismatchError
    from memx.package import snapshot as snap

    data = snap.decode(blob)
    names = set(data.states)
    decode = None
    if any(n.startswith(DECODE_PREFIX) for n in names):
        if manifest.decode is None:
            raise SnapshotMismatchError("snapshot holds a partial generated segment, but this package has no decode graphs",
                                        expected=sorted(schema), actual=sorted(names))
        full = {**schema, **decode_schema(manifest.decode, manifest.vocab_size)}
        snap.check_compatible(data, model_id=model_id, batch=batch, schema=full)
        decode = {k: data.states.pop(k) for k in list(data.states) if k.startswith(DECODE_PREFIX)}
        position = decode[f"{DECODE_PREFIX}position"]
        if position.min(initial=0) < 0 or position.max(initial=0) > manifest.decode.capacity:
            raise SnapshotMismatchError("snapshot decode position out of range", expected=f"0..{manifest.decode.capacity}", actual=position.tolist())
        tokens = decode[f"{DECODE_PREFIX}tokens"]
        if tokens.size and (tokens.min() < 0 or tokens.max() >= manifest.vocab_size):
            raise SnapshotMismatchError("snapshot decode tokens outside the vocabulary", expected=f"0..{manifest.vocab_size - 1}", actual=f"{int(tokens.min())}..{int(tokens.max())}")
    else:
        snap.check_compatible(data, model_id=model_id, batch=batch, schema=schema)
    return data, decode
