"""StreamPool: many independent streams stepped together in batched calls, over a *slot
store* that says where each stream's state lives between steps.

Everything the pool promises is written here once, for every store: token validation,
chunks of at most ``max_batch`` rows, ragged segments padded and masked by ``lengths``,
reset of new streams in-graph, all-or-nothing steps (no stream's state changes unless every
chunk succeeded), snapshots in the common bytes and their checks.

Stores:

- ``HostSlots`` (here): one numpy row per stream, stacked for each call of the Runtime;
- ``DeviceSlots`` (resident.py): rows of device buffers, gathered into a batch on the
  device, run by a ``DeviceStore`` and scattered back at commit: the state stays on the device.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping, Protocol

import numpy as np

from memx.errors import DTypeError, InputError
from memx.package import snapshot as snap
from memx.runtimes.inputs import NO_EXTRAS, check_extras, check_lengths, check_reset, check_tokens


class SlotStore(Protocol):
    """Where a pool's streams keep their state. ``run`` must not change what ``read`` returns:
    the new rows become current only at ``commit``."""

    def open(self, sid: int) -> None:
        """A zero state row for a new stream ``sid`` (its first step resets in-graph)."""

    def close(self, sid: int) -> None: ...

    def read(self, sid: int) -> dict[str, np.ndarray]:
        """Host copies of the stream's state, (1, ...) each."""

    def write(self, sid: int, states: dict[str, np.ndarray]) -> None:
        """Make ``states`` ((1, ...) each, checked by the caller) the stream's, all or nothing."""

    def run(self, sids: list[int], tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
        """One batched step of rows ``sids``: host outputs (B, ...) and the new rows, held apart."""

    def commit(self, sids: list[int], held: Any) -> None:
        """Make the rows held by ``run`` current."""


class HostSlots:
    """One numpy state row per stream; each call stacks the rows of its chunk."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.rows: dict[int, dict[str, np.ndarray]] = {}

    def open(self, sid: int) -> None:
        self.rows[sid] = self.runtime.fresh_state(1).states

    def close(self, sid: int) -> None:
        del self.rows[sid]

    def read(self, sid: int) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.rows[sid].items()}

    def write(self, sid: int, states: dict[str, np.ndarray]) -> None:
        self.rows[sid] = dict(states)

    def run(self, sids: list[int], tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, extras: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
        stacked = {name: np.concatenate([self.rows[s][name] for s in sids], axis=0) for name in self.runtime.state_schema}  # (B, ...)
        return self.runtime.run_step(tokens, lengths, reset, stacked, extras)

    def commit(self, sids: list[int], held: dict[str, np.ndarray]) -> None:
        for row, sid in enumerate(sids):
            self.rows[sid] = {k: v[row : row + 1].copy() for k, v in held.items()}


class StreamPool:
    """Many independent streams, stepped together in batched calls of at most ``max_batch`` rows.

    Streams may be at different depths and have segments of different lengths: rows are
    padded to the longest segment of the call and masked by ``lengths``; new streams are
    reset in-graph. The result for each stream equals stepping it alone.

        pool = runtime.pool(max_batch=32)
        a, b = pool.open(), pool.open()
        out = pool.step({a: tokens_a, b: tokens_b})   # {a: {"logits": (S_a, V)}, b: ...}
        out = pool.step({a: {"tokens": tokens_a, "decoder_ids": ids_a}})  # a package with extra inputs
    """

    def __init__(self, runtime: Any, max_batch: int, slots: SlotStore | None = None):
        self.runtime, self.max_batch = runtime, max_batch
        self.slots: SlotStore = slots if slots is not None else HostSlots(runtime)
        self._pending: dict[int, bool] = {}  # stream id -> its next step starts from the learned initial state
        self._segments: dict[int, int] = {}
        self._ids = itertools.count()
        self._gen: dict[int, Any] = {}  # stream id -> its DecodeRows (batch 1) once it generates
        self._step_logits: dict[int, np.ndarray] = {}  # stream id -> float32 (1, V): last real logits of its last step, until it generates (Stream._step_logits)
        self.segment_len: int | None = None  # generation: tokens a segment holds before its memory is written (None: the decode capacity)

    def open(self) -> int:
        sid = next(self._ids)
        self.slots.open(sid)
        self._pending[sid], self._segments[sid] = True, 0
        return sid

    def close(self, sid: int) -> None:
        sid = self._check(sid)
        self.slots.close(sid)
        del self._pending[sid], self._segments[sid]
        self._gen.pop(sid, None)
        self._step_logits.pop(sid, None)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, sid: object) -> bool:
        return sid in self._pending

    def _check(self, sid: Any) -> int:
        """An open stream's id as the int pool.open gave (numpy integers too; not a bool, float or str)."""
        if isinstance(sid, (bool, np.bool_)) or not isinstance(sid, (int, np.integer)):
            raise DTypeError("a stream id must be an integer", expected="an int that pool.open() returned", actual=f"{type(sid).__name__} {sid!r}")
        if int(sid) not in self._pending:
            raise InputError("unknown stream id", expected=f"one of the {len(self._pending)} open streams", actual=int(sid))
        return int(sid)

    def reset(self, sid: int) -> None:
        sid = self._check(sid)
        self.slots.close(sid)
        self.slots.open(sid)
        self._pending[sid], self._segments[sid] = True, 0
        self._gen.pop(sid, None)
        self._step_logits.pop(sid, None)

    def snapshot(self, sid: int) -> bytes:
        sid = self._check(sid)
        states = self.slots.read(sid)
        if sid in self._gen:
            states.update({k: v.copy() for k, v in self._gen[sid].to_tensors().items()})
        return snap.encode(snap.SnapshotData(self.runtime.model_id, states, np.array([self._pending[sid]]), self._segments[sid]))

    def restore(self, sid: int, blob: bytes) -> None:
        """Replace stream ``sid``'s state by a snapshot's (batch 1); refuses, state unchanged, on any mismatch."""
        from memx.runtimes.generation import DecodeRows, split_snapshot

        sid = self._check(sid)
        data, decode = split_snapshot(blob, self.runtime.manifest, model_id=self.runtime.model_id, batch=1, schema=self.runtime.state_schema)
        self.slots.write(sid, data.states)
        self._pending[sid], self._segments[sid] = bool(data.pending_reset[0]), data.segments
        if decode is not None:
            self._gen[sid] = DecodeRows.from_tensors(decode)
        else:
            self._gen.pop(sid, None)
        self._step_logits.pop(sid, None)

    # --- generation (memx.runtimes.generation) ----------------------------------------------------
    def _check_no_open_segment(self, sid: int) -> None:
        """A step would skip the memory write of a stream's open (generated) segment."""
        rows = self._gen.get(sid)
        if rows is not None and rows.position[0] > 0:
            raise InputError(f"stream {sid} holds a partial segment from append/generate: a step would skip its memory write",
                             expected="an empty segment (position 0)", actual=f"position {int(rows.position[0])}", hint="pool.flush([sid]) first")

    def position(self, sid: int) -> int:
        """Tokens stream ``sid`` holds in its current (not yet written) segment."""
        sid = self._check(sid)
        return int(self._gen[sid].position[0]) if sid in self._gen else 0

    def next_logits(self, sid: int) -> np.ndarray:
        """Logits (V,) of stream ``sid``'s next token (after append, generate or step)."""
        sid = self._check(sid)
        logits = self._logits(sid)
        if logits is None:
            raise InputError("no logits yet: append a prompt to this stream first", expected="a stream that has consumed a token", actual=f"stream {sid}")
        return logits.copy()

    def _logits(self, sid: int) -> np.ndarray | None:
        """Stream ``sid``'s next-token logits (V,) as held (not a copy), or None."""
        rows = self._gen.get(sid)
        if rows is not None:
            return rows.logits[0] if rows.has_logits[0] else None
        step = self._step_logits.get(sid)
        return None if step is None else step[0]

    def _keep_step_logits(self, sid: int, last: np.ndarray) -> None:
        """After a committed step of stream ``sid`` (a package with decode graphs): the logits (V,)
        of its last real token predict its next one, as Stream.step keeps them for a batch row."""
        from memx.runtimes.generation import put

        last = np.asarray(last, np.float32)[None]  # (1, V)
        rows = self._gen.get(sid)
        if rows is not None:  # arrays are replaced, never written: earlier snapshots' views stay as they were
            rows.logits, rows.has_logits = put(rows.logits, np.array([0]), last), put(rows.has_logits, np.array([0]), True)
        else:
            self._step_logits[sid] = last

    def append(self, inputs: Mapping[int, Any]) -> None:
        """Append each stream's 1-D tokens (any number each, ragged): whole segments through the
        step graph, the rest into its decode cache; memory is written when a segment fills.
        Streams are batched (at most ``max_batch`` rows per call). All or nothing."""
        from memx.runtimes.generation import check_new_tokens, check_segment_len

        gen = self.runtime.generator()
        if not isinstance(inputs, Mapping):
            raise InputError("pool.append takes a mapping of stream id to its tokens", expected="{stream id: tokens}", actual=type(inputs).__name__)
        checked: dict[int, np.ndarray] = {}
        for key, given in inputs.items():
            sid = self._check(key)
            if sid in checked:
                raise InputError(f"stream {sid} is given twice in one pool.append", expected="each stream at most once", actual=repr(key))
            checked[sid] = check_new_tokens(given, batch=1, vocab_size=self.runtime.manifest.vocab_size)[0]
        self._append(gen, checked, check_segment_len(self.segment_len, gen.info))

    def _gathered(self, gen: Any, chunk: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
        """The states, pending resets and generation rows of ``chunk``'s streams as one batch
        (fresh generation rows for streams that never generated)."""
        from memx.runtimes.generation import DecodeRows

        reads = [self.slots.read(sid) for sid in chunk]
        states = {name: np.concatenate([r[name] for r in reads]) for name in self.runtime.state_schema}
        pending = np.array([self._pending[sid] for sid in chunk], bool)

        def fresh(sid: int) -> DecodeRows:  # as Stream._rows: the logits of an earlier step carry over
            rows = DecodeRows.empty(gen.info, self.runtime.manifest.vocab_size, 1)
            if sid in self._step_logits:
                rows.logits, rows.has_logits = self._step_logits[sid].copy(), np.ones(1, bool)
            return rows

        return states, pending, DecodeRows.stack([self._gen[sid] if sid in self._gen else fresh(sid) for sid in chunk])

    def _commit_generated(self, held: list[tuple[list[int], Any]]) -> None:
        """Make every chunk's (states, pending, rows, committed) current (only after all succeeded)."""
        for chunk, (states, pending, rows, committed) in held:
            for row, sid in enumerate(chunk):
                self.slots.write(sid, {k: v[row : row + 1].copy() for k, v in states.items()})
                self._pending[sid] = bool(pending[row])
                self._segments[sid] += int(committed[row])
                self._gen[sid] = rows.take(np.array([row]))
                self._step_logits.pop(sid, None)  # carried into its generation rows

    def _append(self, gen: Any, tokens: dict[int, np.ndarray], segment_len: int) -> None:
        held = []
        order = [sid for sid, t in tokens.items() if len(t)]
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            n = max(len(tokens[sid]) for sid in chunk)
            batch = np.zeros((len(chunk), n), np.int64)  # (k, n) padded with token 0
            for row, sid in enumerate(chunk):
                batch[row, : len(tokens[sid])] = tokens[sid]
            counts = np.array([len(tokens[sid]) for sid in chunk], np.int64)
            states, pending, rows = self._gathered(gen, chunk)
            if (rows.position > segment_len).any():
                raise InputError("a stream's partial segment is longer than the pool's segment length", expected=f"<= {segment_len} tokens", actual=rows.position.tolist())
            held.append((chunk, gen.append_rows(states, pending, rows, batch, counts, segment_len)))
        self._commit_generated(held)

    def flush(self, sids: Any = None) -> None:
        """Write the memory of the partial segments of ``sids`` (default: every stream) now."""
        gen = self.runtime.generator()
        ids = list(self._gen) if sids is None else [self._check(s) for s in sids]
        if len(set(ids)) != len(ids):
            raise InputError("a stream is given twice to pool.flush", expected="each stream once", actual=ids)
        ids = [sid for sid in ids if sid in self._gen and self._gen[sid].position[0] > 0]
        held = []
        for start in range(0, len(ids), self.max_batch):
            chunk = ids[start : start + self.max_batch]
            held.append((chunk, gen.flush_rows(*self._gathered(gen, chunk))))
        self._commit_generated(held)

    def generate(self, sids: Any, max_new_tokens: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: Any = None,
                 stop_tokens: Any = (), callback: Any = None) -> Iterator[dict[int, int]]:
        """Generate for streams ``sids`` together: yields {stream id: token} each round for the
        streams still running (each token already appended). A stream stops after one of
        ``stop_tokens`` or ``max_new_tokens``. ``seed``: an int (every stream samples from its own
        generator seeded with it, so each equals the stream generating alone with that seed) or
        {stream id: int}. ``callback({sid: token})`` sees each round."""
        from memx.runtimes.generation import check_max_new_tokens, check_segment_len, check_stop_tokens
        from memx.runtimes.sampling import SamplingOptions, row_rngs, sample

        gen = self.runtime.generator()
        ids = [self._check(s) for s in sids]
        if len(set(ids)) != len(ids):
            raise InputError("a stream is given twice to pool.generate", expected="each stream once", actual=ids)
        steps = check_max_new_tokens(max_new_tokens)
        options = SamplingOptions(temperature, top_k, top_p)
        stops = check_stop_tokens(stop_tokens, self.runtime.manifest.vocab_size)
        seeds = seed if isinstance(seed, Mapping) else {sid: seed for sid in ids}
        rngs = {sid: row_rngs(seeds.get(sid), 1)[0] for sid in ids}
        segment_len = check_segment_len(self.segment_len, gen.info)
        for sid in ids:
            self.next_logits(sid)
        return self._generate(gen, ids, steps, options, stops, rngs, segment_len, callback, sample)

    def _generate(self, gen: Any, ids: list[int], steps: int, options: Any, stops: frozenset[int], rngs: dict, segment_len: int, callback: Any,
                  sample: Any) -> Iterator[dict[int, int]]:
        running = list(ids)
        for _ in range(steps):
            if not running:
                return
            chosen = {sid: sample(self._logits(sid), options, rngs[sid]) for sid in running}
            self._append(gen, {sid: np.array([t], np.int64) for sid, t in chosen.items()}, segment_len)
            running = [sid for sid in running if chosen[sid] not in stops]
            if callback is not None:
                callback(dict(chosen))
            yield chosen

    def state(self, sid: int) -> dict[str, np.ndarray]:
        sid = self._check(sid)
        return self.slots.read(sid)

    def step(self, inputs: Mapping[int, Any]) -> dict[int, dict[str, np.ndarray]]:
        """Step each stream id in ``inputs`` by its 1-D token segment (or, for a package with extra
        step inputs, a dict of "tokens" and each extra input without batch axis). Returns per stream its
        outputs without batch axis, cut to its own segment length. All or nothing: if any
        call fails, no stream's state changes. For a package with decode graphs, a stream's
        next-token logits become those of its last token (``generate`` can follow), as Stream.step."""
        m = self.runtime.manifest
        if not isinstance(inputs, Mapping):
            raise InputError("pool.step takes a mapping of stream id to its segment", expected="{stream id: tokens}", actual=type(inputs).__name__)
        checked: dict[int, np.ndarray] = {}
        extras: dict[int, Mapping[str, np.ndarray]] = {}
        keys: dict[int, Any] = {}  # stream id -> the key that named it, to say which keys collide
        for key, given in inputs.items():
            sid = self._check(key)
            if sid in keys:  # a Mapping whose items() repeat a stream: refuse rather than run only its last segment
                raise InputError(f"stream {sid} is given twice in one pool.step", expected="each stream at most once per step",
                                 actual=f"keys {keys[sid]!r} and {key!r}")
            keys[sid] = key
            self._check_no_open_segment(sid)
            tokens, named = _split(given)
            checked[sid] = check_tokens(tokens, batch=1, vocab_size=m.vocab_size, segment=m.segment)[0]
            extras[sid] = check_extras(named, m.inputs, batch=1, segment_len=len(checked[sid]))
        results: dict[int, dict[str, np.ndarray]] = {}
        last: dict[int, np.ndarray] = {}
        held: list[tuple[list[int], Any]] = []
        order = list(checked)
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            held.append((chunk, self._run_chunk(chunk, checked, extras, results, last)))
        self._commit(held)
        for sid, logits in last.items():
            self._keep_step_logits(sid, logits)
        return results

    def _commit(self, held: list[tuple[list[int], Any]]) -> None:
        """Make every chunk's new rows current (called only after every chunk succeeded)."""
        for chunk, rows in held:
            self.slots.commit(chunk, rows)
            for sid in chunk:
                self._pending[sid], self._segments[sid] = False, self._segments[sid] + 1

    def step_rows(self, sids: Any, tokens: Any, lengths: Any = None, reset: Any = None, **inputs: Any) -> dict[str, np.ndarray]:
        """Step streams ``sids`` by the rows of one batch, as a Stream steps: tokens (N, S), lengths
        (N,) (default S), reset (N,) bool (rows that start anew), the package's extra inputs (N, ...)
        each. Returns the outputs (N, S, ...), zero past each row's length. The batched form of
        :meth:`step` for callers that hold many streams' rows as one array (memx's Triton model);
        the same chunks of ``max_batch`` rows, all or nothing."""
        m = self.runtime.manifest
        ids = [self._check(s) for s in sids]
        if len(set(ids)) != len(ids):
            raise InputError("a stream is given twice in one step", expected="each stream at most once per step", actual=[s for s in ids if ids.count(s) > 1][:4])
        for sid in ids:
            self._check_no_open_segment(sid)
        tok = check_tokens(tokens, batch=len(ids), vocab_size=m.vocab_size, segment=m.segment)
        lens = check_lengths(lengths, batch=len(ids), segment_len=tok.shape[1])
        rst = check_reset(reset, batch=len(ids)) | np.array([self._pending[s] for s in ids], dtype=bool)
        extras = check_extras(inputs, m.inputs, batch=len(ids), segment_len=tok.shape[1])
        outputs: list[dict[str, np.ndarray]] = []
        last: dict[int, np.ndarray] = {}
        held: list[tuple[list[int], Any]] = []
        for start in range(0, len(ids), self.max_batch):
            rows = slice(start, start + self.max_batch)
            chunk = ids[rows]
            out, new = self.slots.run(chunk, tok[rows], lens[rows], rst[rows], {k: v[rows] for k, v in extras.items()} if extras else NO_EXTRAS)
            outputs.append(out)
            last.update(self._last_logits(chunk, out, lens[rows]))
            held.append((chunk, new))
        self._commit(held)
        for sid, logits in last.items():
            self._keep_step_logits(sid, logits)
        return {o.name: outputs[0][o.name] if len(outputs) == 1 else np.concatenate([c[o.name] for c in outputs]) for o in m.outputs}

    def _run_chunk(self, chunk: list[int], tokens: dict[int, np.ndarray], extras: dict[int, Mapping[str, np.ndarray]], results: dict, last: dict) -> Any:
        seg = max(len(tokens[sid]) for sid in chunk)
        batch = np.zeros((len(chunk), seg), dtype=np.int64)  # (B, S) padded with token 0
        lengths = np.array([len(tokens[sid]) for sid in chunk], dtype=np.int64)
        for row, sid in enumerate(chunk):
            batch[row, : lengths[row]] = tokens[sid]
        reset = np.array([self._pending[sid] for sid in chunk], dtype=bool)
        stacked = {i.name: _stack_padded([extras[sid][i.name] for sid in chunk], i.shape, seg, i.pad) for i in self.runtime.manifest.inputs} if self.runtime.manifest.inputs else NO_EXTRAS
        outputs, rows = self.slots.run(chunk, batch, lengths, reset, stacked)
        for row, sid in enumerate(chunk):
            results[sid] = {o.name: _cut(outputs[o.name][row : row + 1], o.segment_axis, int(lengths[row]))[0] for o in self.runtime.manifest.outputs}
        last.update(self._last_logits(chunk, outputs, lengths))
        return rows

    def _last_logits(self, sids: list[int], outputs: Mapping[str, np.ndarray], lengths: np.ndarray) -> dict[int, np.ndarray]:
        """{stream id: logits (V,) of its last real token} for the rows of one step call that had
        tokens; nothing for a package without decode graphs (no generation state, as Stream)."""
        if self.runtime.manifest.decode is None or "logits" not in outputs:
            return {}
        logits = outputs["logits"]  # (B, S, V)
        return {sid: logits[row, lengths[row] - 1].copy() for row, sid in enumerate(sids) if lengths[row] > 0}


def _cut(output: np.ndarray, segment_axis: int | None, length: int) -> np.ndarray:
    """Keep the first ``length`` positions along the segment axis (batch axis included)."""
    if segment_axis is None or output.shape[segment_axis] == length:
        return output
    index = [slice(None)] * output.ndim
    index[segment_axis] = slice(0, length)
    return output[tuple(index)]


def _split(given: Any) -> tuple[Any, dict[str, Any]]:
    """A pool input: tokens alone, or {"tokens": ..., extra input: ...}."""
    if isinstance(given, Mapping):
        if "tokens" not in given:
            raise InputError("a pool input given as a dict needs its tokens", expected='{"tokens": ids, <extra input>: ...}', actual=sorted(map(str, given)))
        return given["tokens"], {k: v for k, v in given.items() if k != "tokens"}
    return given, {}


def _stack_padded(rows: list[np.ndarray], shape: list[int | str], segment_len: int, pad: float) -> np.ndarray:
    """Rows (1, ...) of one extra input -> (B, ...), "segment" axes padded to ``segment_len``."""
    out = np.full((len(rows), *(segment_len if d == "segment" else int(d) for d in shape[1:])), pad, dtype=rows[0].dtype)
    for b, r in enumerate(rows):
        out[(b, *(slice(0, n) for n in r.shape[1:]))] = r[0]
    return out
