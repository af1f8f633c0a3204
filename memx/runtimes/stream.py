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

from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np

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
        outputs = self._store.run(tok, lens, rst, extras)
        self._store.commit()
        self._pending = self._no_reset
        self._segments += 1
        return {k: v[0] for k, v in outputs.items()} if squeeze else outputs

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
        if rows is None:
            self._segments = 0

    def snapshot(self) -> bytes:
        return snap.encode(snap.SnapshotData(self._model_id, self._store.read(), self._pending.copy(), self._segments))

    def restore(self, blob: bytes) -> None:
        """Replace this stream's state by a snapshot's; refuses (state unchanged) on any mismatch."""
        data = snap.decode_checked(blob, model_id=self._model_id, batch=self.batch_size, schema=self.schema)
        self._store.replace(data.states)
        self._pending, self._segments = data.pending_reset.copy(), data.segments
