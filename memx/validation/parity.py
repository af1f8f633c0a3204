"""Long-horizon parity: drive the PyTorch reference and a runtime backend over the same
random streams and compare outputs *and* states at every segment.

The streams mix full and padded segments (random lengths, empty rows), varying
segment lengths, and resets in the middle, in a batch of several streams.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

from memx.package import snapshot as snap
from memx.package.files import Package
from memx.validation.sidebyside import REFERENCE_AHEAD, ReferenceAhead, ThreadSplit, cpu_cores, thread_split, torch_threads  # noqa: F401  (shared with drift.py; importable from here as before)


# a free-running failure reads as amplified rounding (ParityReport.amplification) when the first
# AMPLIFY_EARLY segments agree to AMPLIFY_ROUNDING x atol and the tolerance is crossed only from
# segment AMPLIFY_MIN_SEGMENT on, growing steadily (half way within AMPLIFY_STEADY x the geometric mean)
AMPLIFY_EARLY, AMPLIFY_ROUNDING, AMPLIFY_MIN_SEGMENT, AMPLIFY_STEADY = 4, 0.1, 8, 100.0


@dataclass
class Worst:
    error: float = 0.0
    segment: int = -1
    tensor: str = ""
    index: list[int] = field(default_factory=list)


@dataclass
class ParityReport:
    backend: str
    reference: str
    segments: int
    batch: int
    atol: float
    seed: int
    passed: bool
    max_error: float
    worst: Worst
    first_failure: dict[str, Any] | None
    per_tensor_max: dict[str, float]
    per_segment_max: list[float]  # max over all tensors at each segment
    resets: int
    padded_rows: int
    runtime: dict[str, Any] = field(default_factory=dict)  # what ran: the candidate runtime's describe()
    device: str = "cpu"
    teacher_forced: bool = False  # the candidate started every segment from the reference's state

    @property
    def validation_key(self) -> str:
        """Where :func:`memx.validation.record` keeps it in the manifest: "onnxruntime:cpu", ..."""
        return f"{self.backend}:{self.device}" + (":teacher-forced" if self.teacher_forced else "")

    def to_record(self) -> dict[str, Any]:
        return self.to_dict()

    def summary(self) -> str:
        w = self.worst
        where = f"at segment {w.segment}, {w.tensor}{w.index}" if w.segment >= 0 else ""
        head = f"{'PASS' if self.passed else 'FAIL'}: {self.backend} vs {self.reference} over {self.segments} segments x {self.batch} streams"
        if self.teacher_forced:
            head += " (teacher-forced: each segment from the reference's state)"
        text = f"{head}; max abs error {self.max_error:.3g} {where} (atol {self.atol:g})"
        if self.first_failure:
            f = self.first_failure
            text += f"; first segment over tolerance: {f['segment']} ({f['tensor']}, error {f['error']:.3g})"
        growth = self.amplification()
        if growth is not None:
            text += (f". The error starts at rounding level ({max(self.per_segment_max[:AMPLIFY_EARLY]):.2g} in the first {AMPLIFY_EARLY} segments) and grows"
                     f" about x{growth:.2f} per segment: the model's memory recurrence amplifies rounding, so any two float implementations part;"
                     " `memx validate --teacher-forced` measures each step's own error at every depth")
        elif self.first_failure and not self.teacher_forced and self.first_failure["segment"] >= AMPLIFY_MIN_SEGMENT:
            text += (". Failing only from a later segment on can be a trained memory amplifying rounding on long never-reset streams;"
                     " `memx validate --teacher-forced` tells: it measures each step's own error at every depth")
        return text

    def amplification(self) -> float | None:
        """For a free-running failure whose error starts at rounding level and grows steadily
        (a memory recurrence that amplifies rounding, not a wrong graph): the mean growth factor
        per segment up to the first failure; otherwise None."""
        errors, f = self.per_segment_max, self.first_failure
        if self.passed or self.teacher_forced or f is None or f["segment"] < AMPLIFY_MIN_SEGMENT or len(errors) <= f["segment"]:
            return None
        early = max(errors[:AMPLIFY_EARLY])
        if not 0 < early <= self.atol * AMPLIFY_ROUNDING or not math.isfinite(errors[f["segment"]]):
            return None
        start = max(range(AMPLIFY_EARLY), key=lambda i: errors[i])
        end = f["segment"]
        middle = (start + end) // 2  # a steady growth passes the geometric mean half way; a jump (a graph wrong from some depth on) does not
        if not math.sqrt(early * errors[end]) / AMPLIFY_STEADY <= max(errors[middle], early) <= math.sqrt(early * errors[end]) * AMPLIFY_STEADY:
            return None
        return float((errors[end] / early) ** (1.0 / max(1, end - start)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_segment_max")
        return d


@dataclass
class StreamPlan:
    """Random but reproducible inputs for one segment of a batch of streams."""

    tokens: np.ndarray  # (B, S) int64
    lengths: np.ndarray  # (B,) int64
    reset: np.ndarray  # (B,) bool
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # the package's extra step inputs


def plan_segment(rng: np.random.Generator, *, batch: int, vocab: int, seg_min: int, seg_max: int, reset_prob: float) -> StreamPlan:
    s = seg_max if rng.random() < 0.5 else int(rng.integers(seg_min, seg_max + 1))
    tokens = rng.integers(0, vocab, size=(batch, s), dtype=np.int64)
    kind = rng.random(batch)
    lengths = np.where(kind < 0.6, s, rng.integers(1, s + 1, size=batch))  # 40% padded rows
    lengths = np.where(kind > 0.95, 0, lengths).astype(np.int64)  # some rows with no tokens this step
    reset = rng.random(batch) < reset_prob
    return StreamPlan(tokens, lengths, reset)


Segment = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (outputs, state) after one segment


class ReferenceRollouts:
    """The reference backend's outputs and states per segment, kept so that later
    validations of the same model over the same streams (another backend, another
    custom-op library, another device) do not run the reference again.

        rollouts = ReferenceRollouts()
        validate(pkg, backend="onnxruntime", reference_rollouts=rollouts)
        validate(pkg, backend="torch", device="cuda", reference_rollouts=rollouts)  # torch CPU runs once

    The key is what the reference's numbers depend on: the model id (family, config, state
    schema, weights), the reference backend, and the stream plan (segments, batch, seed,
    reset probability, segment range, vocabulary).
    """

    def __init__(self) -> None:
        self._runs: dict[tuple, list[Segment]] = {}

    @staticmethod
    def key(pkg: Package, *, reference: str, segments: int, batch: int, seed: int, reset_prob: float) -> tuple:
        m = pkg.manifest
        return (m.model_id(), reference, segments, batch, seed, reset_prob, m.segment["min"], m.segment["max"], m.vocab_size)

    def get(self, key: tuple) -> list[Segment] | None:
        return self._runs.get(key)

    def put(self, key: tuple, run: list[Segment]) -> None:
        self._runs[key] = run

    def __len__(self) -> int:
        return len(self._runs)


def _compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, list[int]]:
    """The largest |ref - got| (in float64) and the index of its first occurrence; inf and the
    shape (shapes differ) or the first non-finite index (a NaN or Inf anywhere)."""
    if ref.shape == got.shape and ref.size and ref.dtype == got.dtype == np.float32:
        found = _compare_float32(ref, got)
        if found is not None:
            return found
    return _compare_float64(ref, got)


def _compare_float64(ref: np.ndarray, got: np.ndarray) -> tuple[float, list[int]]:
    """_compare through float64 copies of both arrays: the exact path, any dtype."""
    if ref.shape != got.shape:
        return float("inf"), list(got.shape)
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    if not np.isfinite(diff).all():
        return float("inf"), [int(i) for i in np.argwhere(~np.isfinite(diff))[0]]
    if diff.size == 0:
        return 0.0, []
    idx = int(np.argmax(diff))
    return float(diff.flat[idx]), [int(i) for i in np.unravel_index(idx, diff.shape)]


def _compare_float32(ref: np.ndarray, got: np.ndarray) -> tuple[float, list[int]] | None:
    """_compare of two float32 arrays without a float64 copy of either: the float32 difference is
    the exact one correctly rounded, and rounding never reverses an order, so the elements whose
    float32 difference is the largest hold every element whose exact difference is; those few
    are measured in float64. Gives exactly what the float64 path gives; None (take that path)
    when the largest float32 difference is not finite (a NaN or Inf, or an overflow)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow or Inf - Inf: the float64 path measures (and warns) as it did
        diff = np.subtract(ref, got, dtype=np.float32)  # same shape as ref
    np.abs(diff, out=diff)
    top = diff.max()
    if not np.isfinite(top):
        return None
    if top == 0:  # equal everywhere (with gradual underflow, a - b rounds to 0 only when a == b)
        return 0.0, [0] * diff.ndim
    ties = np.flatnonzero(diff == top)  # (k,) flat indices, ascending
    exact = np.abs(ref.flat[ties].astype(np.float64) - got.flat[ties].astype(np.float64))  # (k,)
    best = int(np.argmax(exact))  # the first of the largest, as np.argmax over the whole array
    return float(exact[best]), [int(i) for i in np.unravel_index(int(ties[best]), diff.shape)]


@dataclass
class _Tally:
    """What the comparisons of every segment add up to (the report's numbers)."""

    atol: float
    worst: Worst = field(default_factory=Worst)
    first: dict[str, Any] | None = None
    per_tensor: dict[str, float] = field(default_factory=dict)
    per_segment: list[float] = field(default_factory=list)

    def add(self, seg: int, out_r: dict[str, np.ndarray], state_r: dict[str, np.ndarray],
            out_c: dict[str, np.ndarray], state_c: dict[str, np.ndarray]) -> None:
        """Compare every output and every state of one segment (reference first)."""
        pairs = [(k, out_r[k], out_c[k]) for k in out_r]
        pairs += [(f"state.{k}", v, state_c[k]) for k, v in state_r.items()]
        seg_max = 0.0
        for name, r, c in pairs:
            err, index = _compare(r, c)
            seg_max = max(seg_max, err)
            self.per_tensor[name] = max(self.per_tensor.get(name, 0.0), err)
            if self.worst.segment < 0 or err > self.worst.error:
                self.worst = Worst(err, seg, name, index)
            if self.first is None and not err <= self.atol:
                self.first = {"segment": seg, "tensor": name, "error": err, "index": index}
        self.per_segment.append(seg_max)


ReferenceStep = tuple[StreamPlan, dict[str, np.ndarray], dict[str, np.ndarray]]  # (plan, outputs, state) of one segment


def stream_plans(rng: np.random.Generator, pkg: Package, *, batch: int, reset_prob: float) -> Iterator[StreamPlan]:
    """The plan of every segment in turn (endless), extra inputs included: the rng is drawn in
    segment order, in the thread that iterates."""
    m = pkg.manifest
    while True:
        plan = plan_segment(rng, batch=batch, vocab=m.vocab_size, seg_min=m.segment["min"], seg_max=m.segment["max"], reset_prob=reset_prob)
        plan.extras = m.sample_inputs(rng, batch, plan.tokens.shape[1])
        yield plan


def validate(
    package: str | os.PathLike | Package,
    *,
    backend: str = "onnxruntime",
    device: str = "cpu",
    reference: str = "torch",
    segments: int = 256,
    batch: int = 4,
    atol: float = 1e-4,
    seed: int = 0,
    reset_prob: float = 0.03,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    reference_rollouts: ReferenceRollouts | None = None,
    reference_options: dict[str, Any] | None = None,
    teacher_forced: bool = False,
    threads: ThreadSplit | None = None,
) -> ParityReport:
    """Compare ``backend`` against ``reference`` on ``package`` over ``segments`` segments.
    With ``reference_rollouts``, the reference's run is taken from it when an earlier call
    made the same one, and stored in it otherwise. ``reference_options`` go to the reference's
    backend (for torch: ``model``, ``factory``, ``trust_package_factory``: memx.models.reference).

    ``teacher_forced``: every segment the candidate starts from the reference's state, so the
    report measures one step's error at every depth. Use it for models whose memory recurrence
    amplifies rounding (an untrained RMT around a pretrained encoder): free-running, any two
    float implementations drift apart there, whatever their per-step agreement.

    The reference runs in a second thread, up to REFERENCE_AHEAD segments ahead of the
    candidate (torch and ONNX Runtime release the GIL), on the same segments in the same order;
    ``threads`` (default :func:`thread_split`) says how they share the CPU cores."""
    from memx import runtimes
    from memx.progress import progress_range

    pkg = package if isinstance(package, Package) else Package.open(package)
    backend_options, reference_options = dict(backend_options or {}), dict(reference_options or {})
    split = threads or thread_split(backend, device, reference, backend_options, reference_options)
    if split.candidate is not None:
        backend_options["intra_op_threads"] = split.candidate
    if split.reference is not None:
        reference_options["intra_op_threads"] = split.reference
    key = ReferenceRollouts.key(pkg, reference=reference, segments=segments, batch=batch, seed=seed, reset_prob=reset_prob)
    recorded = reference_rollouts.get(key) if reference_rollouts is not None else None
    recording: list[Segment] = []
    ref_s = None if recorded is not None else runtimes.open(pkg, backend=reference, **reference_options).stream(batch)
    cand_rt = runtimes.open(pkg, backend=backend, device=device, **backend_options)
    cand_s = cand_rt.stream(batch)

    def reference_step(seg: int, plan: StreamPlan) -> Segment:  # in the reference's thread, one segment after the other
        if recorded is not None:
            return recorded[seg]
        return ref_s.step(plan.tokens, plan.lengths, plan.reset, **plan.extras), ref_s.state

    tally = _Tally(atol)
    resets = padded = 0
    previous_r: dict[str, np.ndarray] = {}  # the reference state after the last segment (teacher forcing)
    plans = stream_plans(np.random.default_rng(seed), pkg, batch=batch, reset_prob=reset_prob)
    with torch_threads(split.torch if recorded is None or backend == "torch" else None), ReferenceAhead(plans, reference_step, segments) as ahead:
        for seg in progress_range(segments, f"validate {backend}", enabled=progress):
            plan, out_r, state_r = ahead.next()
            resets += int(plan.reset.sum())
            padded += int((plan.lengths < plan.tokens.shape[1]).sum())
            if reference_rollouts is not None and recorded is None:
                recording.append(({k: v.copy() for k, v in out_r.items()}, state_r))
            if teacher_forced and seg > 0:
                cand_s.restore(snap.encode(snap.SnapshotData(cand_s.model_id, previous_r, np.zeros(batch, dtype=bool), seg)))
            out_c = cand_s.step(plan.tokens, plan.lengths, plan.reset, **plan.extras)
            tally.add(seg, out_r, state_r, out_c, cand_s.state)
            previous_r = state_r
    if reference_rollouts is not None and recorded is None:
        reference_rollouts.put(key, recording)
    return ParityReport(
        backend=backend, reference=reference, segments=segments, batch=batch, atol=atol, seed=seed,
        passed=tally.first is None, max_error=tally.worst.error, worst=tally.worst, first_failure=tally.first,
        per_tensor_max=tally.per_tensor, per_segment_max=tally.per_segment, resets=resets, padded_rows=padded, runtime=cand_rt.describe(),
        device=device, teacher_forced=teacher_forced,
    )
