"""The one Stream (DESIGN.md §5): a stream, or a fixed batch of streams, carrying memory
across steps, over a *state store* that says where the state lives.

Everything the contract promises is written here once, for every store: input validation,
the reset-on-first-step rule, transactional steps (the store holds the new state apart
until ``commit``; any error before it leaves state, pending resets and the segment count
as they were), ``reset(rows)``, snapshots in the common bytes and their checks.

Stores (one per kind of memory):

- ``HostStore`` (here): numpy arrays handed to the Runtime's backend every step (CPU);
- ``DeviceStore`` (resident.py): ping-pong device buffers (ORT OrtValues, torch tensors,
  TensorRT buffers) that never leave the device during steps; CUDA graphs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol

import numpy as np

from memx.errors import BackendUnavailableError, InputError
from memx.package import snapshot as snap
from memx.runtimes.inputs import as_array, check_extras, check_lengths, check_reset, check_tokens, reset_selection

if TYPE_CHECKING:
    from memx.package.manifest import Manifest


class StateStore(Protocol):
    """Where a stream's state lives. ``run`` must not change what ``read`` returns: the new
    state becomes current only at ``commit``."""

    def run(self, tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step from the current state: the outputs (host arrays); the new state is held apart."""

    def commit(self) -> None:
        """Make the state of the last successful ``run`` current."""

    def read(self) -> dict[str, np.ndarray]:
        """Copies of the current state tensors, (B, ...) each, on the host."""

    def replace(self, states: dict[str, np.ndarray]) -> None:
        """Make ``states`` (checked against the schema by the caller; owned by the store
        afterwards) current, all or nothing."""


class HostStore:
    """State as numpy arrays, run by ``runtime.run_step`` (validated, finite, shapes checked)."""

    def __init__(self, runtime: Any, batch_size: int):
        self.runtime = runtime
        self.states: dict[str, np.ndarray] = runtime.fresh_state(batch_size).states
        self._next: dict[str, np.ndarray] | None = None

    def run(self, tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, self._next = self.runtime.run_step(tokens, lengths, reset, self.states, extras)
        return outputs

    def commit(self) -> None:
        if self._next is not None:
            self.states, self._next = self._next, None

    def read(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.states.items()}

    def replace(self, states: dict[str, np.ndarray]) -> None:
        self.states = dict(states)


class Stream:
    """One stream (or a fixed batch of ``batch_size`` streams) carrying memory across steps.

        s = runtime.stream(4)       # Runtime.stream picks the store: host arrays or device buffers
        out = s.step(tokens)        # (4, S) ids -> {"logits": (4, S, V), ...}
        blob = s.snapshot(); s.restore(blob); s.reset([1])
    """

    def __init__(self, runtime: Any, batch_size: int):
        self.runtime = runtime
        m = runtime.manifest
        self._bind(m, runtime.model_id, runtime.state_schema, HostStore(runtime, batch_size), batch_size)

    def _bind(self, manifest: "Manifest", model_id: str, schema: dict[str, tuple[tuple[int, ...], str]], store: StateStore, batch_size: int) -> None:
        """What every stream holds, whatever its store."""
        self.manifest, self.batch_size, self.schema, self._store = manifest, batch_size, schema, store
        self._model_id = model_id
        self._pending = np.ones(batch_size, dtype=bool)  # rows that start from the learned initial state
        self._segments = 0
        self._no_reset = np.zeros(batch_size, dtype=bool)  # shared by every step after the first; never written
        self._no_reset.flags.writeable = False
        self._lengths: dict[int, np.ndarray] = {}
        self._gen = None  # DecodeRows once the stream generates (memx.runtimes.generation)
        self._step_logits: np.ndarray | None = None  # (B, V) last real logits of the last step, for a package with decode graphs
        self.segment_len: int | None = None  # generation: tokens a segment holds before its memory is written (None: the decode capacity)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the current state tensors, (B, ...) each."""
        return self._store.read()

    @property
    def segments(self) -> int:
        return self._segments

    @property
    def pending(self) -> np.ndarray:
        """bool (B,): rows whose next step starts from the learned initial state."""
        return self._pending

    def step(self, tokens: Any, lengths: Any = None, reset: Any = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Run one segment. tokens (B, S) int (or (S,) for batch 1); lengths (B,) real tokens
        per row (default S); reset (B,) bool starts rows anew; ``inputs``: the package's extra
        step inputs by name (manifest ``inputs``, e.g. ``decoder_ids=``). Returns the outputs
        by name (batch axis dropped when tokens were 1-D). On any error the state is unchanged."""
        m = self.manifest
        tokens = as_array(tokens, "tokens")
        squeeze = tokens.ndim == 1
        tok = check_tokens(tokens, batch=self.batch_size, vocab_size=m.vocab_size, segment=m.segment)
        lens = self._full_lengths(tok.shape[1]) if lengths is None else check_lengths(lengths, batch=self.batch_size, segment_len=tok.shape[1])
        rst = self._pending if reset is None else check_reset(reset, batch=self.batch_size) | self._pending
        extras = check_extras(inputs, m.inputs, batch=self.batch_size, segment_len=tok.shape[1])
        if self._gen is not None and (self._gen.position > 0).any():
            raise InputError("the stream holds a partial segment from append/generate: a step would skip its memory write", expected="an empty segment (position 0)",
                             actual=f"positions {self._gen.position.tolist()}", hint="append until the segment fills, or call flush() first")
        outputs = self._store.run(tok, lens, rst, extras)
        self._store.commit()
        self._pending = self._no_reset
        self._segments += 1
        if m.decode is not None and "logits" in outputs:
            self._keep_step_logits(outputs["logits"], lens)
        return {k: v[0] for k, v in outputs.items()} if squeeze else outputs

    def _keep_step_logits(self, logits: np.ndarray, lengths: np.ndarray) -> None:
        """Rows that had tokens: their last real logits predict the next token (generate after step)."""
        rows = np.flatnonzero(lengths > 0)
        last = logits[rows, lengths[rows] - 1]  # (k, V)
        if self._gen is not None:
            from memx.runtimes.generation import put

            self._gen.logits, self._gen.has_logits = put(self._gen.logits, rows, last), put(self._gen.has_logits, rows, True)
            return
        if self._step_logits is None:
            self._step_logits = np.full((self.batch_size, logits.shape[-1]), np.nan, np.float32)
        self._step_logits[rows] = last

    def _full_lengths(self, segment_len: int) -> np.ndarray:
        """lengths for a step without padding, made once per segment length (read-only)."""
        cached = self._lengths.get(segment_len)
        if cached is None:
            cached = check_lengths(None, batch=self.batch_size, segment_len=segment_len)
            cached.flags.writeable = False
            self._lengths[segment_len] = cached
        return cached

    def reset(self, rows: Any = None) -> None:
        """Start rows (default: all) anew at the next step; their state is zeroed now."""
        sel = reset_selection(rows, self.batch_size)
        states = self._store.read()
        for arr in states.values():
            arr[sel] = 0
        self._store.replace(states)
        self._pending = self._pending | sel
        if self._gen is not None:
            self._gen.clear(np.flatnonzero(sel))
        if self._step_logits is not None:
            self._step_logits[sel] = np.nan
        if rows is None:
            self._segments = 0

    def snapshot(self) -> bytes:
        """The state, pending resets and segment count; for a stream that generates, also its
        partial segment (tokens, decode cache, next-token logits) as ``decode.*`` tensors."""
        states = self._store.read()
        if self._gen is not None:
            states.update({k: v.copy() for k, v in self._gen.to_tensors().items()})
        return snap.encode(snap.SnapshotData(self._model_id, states, self._pending.copy(), self._segments))

    def restore(self, blob: bytes) -> None:
        """Replace this stream's state by a snapshot's; refuses (state unchanged) on any mismatch."""
        from memx.runtimes.generation import DecodeRows, split_snapshot

        data = split_snapshot(blob, self.manifest, model_id=self._model_id, batch=self.batch_size, schema=self.schema)
        states, decode = data
        self._store.replace(states.states)
        self._pending, self._segments = states.pending_reset.copy(), states.segments
        self._gen = DecodeRows.from_tensors(decode) if decode is not None else None
        self._step_logits = None

    # --- generation (memx.runtimes.generation) ----------------------------------------------------
    def _generator(self) -> Any:
        if self.runtime is None:
            raise BackendUnavailableError("generation runs on host streams", expected="runtime.stream(resident=False)", actual="a device-resident stream")
        return self.runtime.generator()

    def _rows(self, gen: Any) -> Any:
        """The generation state, made on first use (logits of an earlier step carried over)."""
        if self._gen is None:
            from memx.runtimes.generation import DecodeRows

            rows = DecodeRows.empty(gen.info, self.manifest.vocab_size, self.batch_size)
            if self._step_logits is not None:
                known = ~np.isnan(self._step_logits[:, 0])
                rows.logits[known], rows.has_logits[known] = self._step_logits[known], True
            return rows
        return self._gen

    @property
    def position(self) -> np.ndarray:
        """int64 (B,): tokens each row holds in its current (not yet written) segment."""
        return np.zeros(self.batch_size, np.int64) if self._gen is None else self._gen.position.copy()

    def append(self, tokens: Any) -> None:
        """Consume tokens (n,) for a batch-1 stream or (B, n): whole segments through the step
        graph, the rest into the decode cache; memory is written each time a segment fills
        (``segment_len`` tokens, default the package's decode capacity). All or nothing."""
        from memx.runtimes.generation import check_new_tokens, check_segment_len

        gen = self._generator()
        tok = check_new_tokens(tokens, batch=self.batch_size, vocab_size=self.manifest.vocab_size)
        self._append(gen, tok, np.full(self.batch_size, tok.shape[1], np.int64), check_segment_len(self.segment_len, gen.info))

    def _append(self, gen: Any, tok: np.ndarray, counts: np.ndarray, segment_len: int) -> None:
        rows = self._rows(gen)
        if (rows.position > segment_len).any():
            raise InputError("the stream's partial segment is longer than its segment length", expected=f"<= {segment_len} tokens", actual=rows.position.tolist(),
                             hint="set segment_len back, or flush() first")
        states, pending, rows, committed = gen.append_rows(self._store.read(), self._pending.copy(), rows, tok, counts, segment_len)
        self._store.replace(states)
        self._pending, self._gen = pending, rows
        self._segments += int(committed.max())

    def next_logits(self) -> np.ndarray:
        """Logits of each row's next token: (V,) for a batch-1 stream, else (B, V)."""
        rows = self._gen
        has = rows.has_logits if rows is not None else (~np.isnan(self._step_logits[:, 0]) if self._step_logits is not None else np.zeros(self.batch_size, bool))
        if not has.all():
            raise InputError("no logits yet: append a prompt (or step) first", expected="every row has consumed a token", actual=f"rows {np.flatnonzero(~has).tolist()} have none")
        logits = rows.logits if rows is not None else self._step_logits
        return logits[0].copy() if self.batch_size == 1 else logits.copy()

    def flush(self) -> None:
        """Write the memory of the partial segment now (a shorter segment); nothing to do at a boundary."""
        if self._gen is None:
            return
        gen = self._generator()
        states, pending, rows, committed = gen.flush_rows(self._store.read(), self._pending.copy(), self._gen)
        self._store.replace(states)
        self._pending, self._gen = pending, rows
        self._segments += int(committed.max())

    def generate(self, max_new_tokens: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop_tokens: Any = (), callback: Callable[[Any], None] | None = None) -> Iterator[Any]:
        """Yield up to ``max_new_tokens`` new tokens, each appended before it is yielded (an int
        for a batch-1 stream, else (B,) with -1 for rows that have stopped). A row stops after
        one of ``stop_tokens``; the others go on. temperature 0 is greedy; row b samples with
        seed + b (SplitMix64, the same as libmemx). ``callback(token)`` sees each yield."""
        from memx.runtimes.generation import check_max_new_tokens, check_stop_tokens, check_segment_len
        from memx.runtimes.sampling import SamplingOptions, row_rngs, sample

        gen = self._generator()
        steps = check_max_new_tokens(max_new_tokens)
        options = SamplingOptions(temperature, top_k, top_p)
        stops = check_stop_tokens(stop_tokens, self.manifest.vocab_size)
        rngs = row_rngs(seed, self.batch_size)
        segment_len = check_segment_len(self.segment_len, gen.info)
        self.next_logits()  # every row must have logits before the first draw
        return self._generate(gen, steps, options, stops, rngs, segment_len, callback, sample)

    def _generate(self, gen: Any, steps: int, options: Any, stops: frozenset[int], rngs: list, segment_len: int, callback: Any, sample: Any) -> Iterator[Any]:
        running = np.ones(self.batch_size, bool)
        for _ in range(steps):
            if not running.any():
                return
            logits = self._gen.logits if self._gen is not None else self._step_logits
            chosen = np.full(self.batch_size, -1, np.int64)
            for b in np.flatnonzero(running):
                chosen[b] = sample(logits[b], options, rngs[b])
            self._append(gen, np.maximum(chosen, 0)[:, None], running.astype(np.int64), segment_len)
            out = int(chosen[0]) if self.batch_size == 1 else chosen
            running &= ~np.isin(chosen, list(stops)) if stops else running
            if callback is not None:
                callback(out)
            yield out
