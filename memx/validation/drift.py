"""Accuracy and drift of a quantized package against its reference, over long streams.

Two measurements, both on the same inputs for candidate and reference:

- **drift**: ``batch`` continuous streams of ``segments`` segments (the package's task
  episodes back to back, else random tokens), never reset: per segment the largest output
  error, the top-1 agreement and the mean KL(reference || candidate) of the logits, and the
  relative error of every state tensor; the first segment where a state's relative error
  passes ``drift_tol`` is the first divergence;
- **task accuracy** (packages of zoo models): enough held-out episodes for at least
  ``segments`` segments, through both runtimes.

The report is saved into the package (``reports/precision-vs-REF.json`` and a PNG plot).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from memx.errors import BuildCheckError, ManifestError
from memx.package.files import Package, write_text_atomic
from memx.validation.sidebyside import ReferenceAhead, ThreadSplit, side_by_side, thread_split, torch_threads
from memx.validation.sources import RandomSource, TaskSource

REPORTS_DIR = "reports"
# packages without a task: a quantized package must pick the reference's top token this often
# (mean over every real position of every segment) and stay this close in KL (nats, mean)
MIN_TOP1_AGREEMENT, MAX_KL = 0.95, 0.05


@dataclass
class TaskAccuracy:
    task: str
    metric: str
    items: int
    segments: int
    reference: float
    candidate: float
    agreement: float  # scored answers predicted identically by both

    @property
    def drop_points(self) -> float:
        return round(100.0 * (self.reference - self.candidate), 9)  # 2 of 200 items is 1.00 points, not 1.0000000000000142


@dataclass
class DriftReport:
    package: str
    precision: str
    reference: str
    segments: int
    batch: int
    stream_source: str
    drift_tol: float
    output_max_error: list[float]  # per segment
    top1_agreement: list[float]  # per segment, over real token positions
    kl: list[float]  # per segment, mean over real positions
    state_rel_error: dict[str, list[float]]  # per state tensor, per segment
    first_divergence: dict[str, Any] | None
    task_accuracy: TaskAccuracy | None = None
    max_accuracy_drop: float = 1.0  # points
    runtime: dict[str, Any] = field(default_factory=dict)
    against: str = "torch"  # as given to compare_precision: "torch" or the reference package's path
    reports: dict[str, str] = field(default_factory=dict)  # files save_report wrote into the package: {"json": ..., "png": ...}
    min_top1_agreement: float = MIN_TOP1_AGREEMENT  # the gate of packages without a task
    max_kl: float = MAX_KL

    @property
    def validation_key(self) -> str:
        """Where :func:`memx.validation.record` keeps it in the manifest: "precision:precision-vs-torch", ..."""
        return f"precision:{report_name(self.against)}"

    @property
    def gate(self) -> str:
        """What decides ``passed``: the task accuracy drop (packages with a task), else the
        top-1 agreement and KL of the logits over the streams, else nothing (no logits)."""
        if self.task_accuracy is not None:
            return "task"
        return "logits" if self.top1_agreement else "none"

    @property
    def passed(self) -> bool:
        if self.gate == "task":
            return self.task_accuracy.drop_points <= self.max_accuracy_drop
        if self.gate == "logits":
            s = self.summary_numbers()
            return s["top1_agreement_mean"] >= self.min_top1_agreement and s["kl_mean"] <= self.max_kl
        return True

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def gate_text(self) -> str:
        """What the verdict rests on, with the numbers and the bound (memx validate prints it, the plot's title shows it)."""
        if self.gate == "task":
            acc = self.task_accuracy
            within = "<=" if acc.drop_points <= self.max_accuracy_drop else ">"
            return (f"task accuracy {acc.candidate:.1%} vs {acc.reference:.1%} (drop {acc.drop_points:.2f} {within} {self.max_accuracy_drop:g} points; "
                    f"{acc.task}, {acc.metric})")
        if self.gate == "logits":
            s = self.summary_numbers()
            return f"top-1 agreement {s['top1_agreement_mean']:.2%} (at least {self.min_top1_agreement:.0%}), KL {s['kl_mean']:.3g} (at most {self.max_kl:g})"
        return "report only (no logits to compare)"

    def verdict_line(self) -> str:
        """"PASS: task accuracy ... ; state drift is informational" — the verdict, its gate, and that the state error is not it."""
        return f"{self.verdict}: {self.gate_text()}; state drift is informational"

    def summary_numbers(self) -> dict[str, Any]:
        agree = np.asarray(self.top1_agreement)
        last = slice(max(0, len(agree) - max(1, len(agree) // 10)), None)
        states = {k: float(np.max(v)) for k, v in self.state_rel_error.items()}
        return {
            "top1_agreement_mean": float(agree.mean()) if agree.size else 1.0,
            "top1_agreement_last10pct": float(agree[last].mean()) if agree.size else 1.0,
            "kl_mean": float(np.mean(self.kl)) if self.kl else 0.0,
            "output_max_error": float(np.max(self.output_max_error)) if self.output_max_error else 0.0,
            "state_rel_error_max": states,
            "state_rel_error_final": {k: float(v[-1]) for k, v in self.state_rel_error.items() if v},
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["summary"] = self.summary_numbers()
        if self.task_accuracy is not None:
            d["task_accuracy"]["drop_points"] = self.task_accuracy.drop_points
        return d

    def to_record(self) -> dict[str, Any]:
        """What goes into the manifest's validation entry (no per-segment curves)."""
        d = self.to_dict()
        for k in ("output_max_error", "top1_agreement", "kl", "state_rel_error"):
            d.pop(k)
        return d


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logit_metrics(ref: np.ndarray, cand: np.ndarray, lengths: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean KL) over real positions of (B, S, V) logits."""
    mask = np.arange(ref.shape[1])[None, :] < lengths[:, None]  # (B, S)
    if not mask.any():
        return 1.0, 0.0
    agree = (ref.argmax(-1) == cand.argmax(-1))[mask].mean()
    lp, lq = _log_softmax(ref), _log_softmax(cand)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)[mask].mean()
    return float(agree), float(max(kl, 0.0))


def _rel_error(ref: np.ndarray, cand: np.ndarray) -> float:
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    return float(np.linalg.norm(cand64 - ref64) / max(np.linalg.norm(ref64), 1e-12))


def open_reference(pkg: Package, against: str | os.PathLike, reference_options: dict[str, Any] | None = None, *,
                   intra_op_threads: int | None = None, package_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The reference runtime: ``"torch"`` (the package's fp32 reference weights in PyTorch)
    or another package of the same model (run with ONNX Runtime, on ``intra_op_threads``
    threads if given, with ``package_options`` for its backend)."""
    from memx import runtimes

    if str(against) == "torch":
        return runtimes.open(pkg, backend="torch", **(reference_options or {})), "torch"
    ref = Package.open(against)
    if ref.manifest.model_id() != pkg.manifest.model_id():
        raise ManifestError("the reference package is a different model", expected=f"model id {pkg.manifest.model_id()[:16]}", actual=ref.manifest.model_id()[:16])
    options = {**(package_options or {}), **({"intra_op_threads": intra_op_threads} if intra_op_threads else {})}
    return runtimes.open(ref, backend="onnxruntime", **options), f"{ref.path} ({ref.manifest.precision}, onnxruntime)"


@dataclass(frozen=True)
class TaskPlan:
    """What the held-out task accuracy of a package runs: its task's episodes, enough of them
    for >= ``segments`` segments (at least 200), and the zoo entry's metric."""

    task: str
    segment_len: int
    segments_per_item: int
    items: int
    metric: str  # "items" (whole episodes right) or token accuracy

    def result(self, ref: Any, cand: Any) -> TaskAccuracy:
        """The TaskAccuracy of the reference's and the candidate's scores (runtime_task_accuracy)."""
        pick = (lambda s: s.accuracy) if self.metric == "items" else (lambda s: s.token_accuracy)
        return TaskAccuracy(self.task, self.metric, self.items, self.items * self.segments_per_item, pick(ref), pick(cand),
                            float((ref.predictions == cand.predictions).mean()))


def task_plan(pkg: Package, *, segments: int) -> TaskPlan | None:
    """The task accuracy plan of ``pkg``, or None when its manifest names no task."""
    from memx.models.zoo import get_zoo, is_zoo
    from memx.training.tasks import get_task

    m = pkg.manifest
    if not m.task:
        return None
    entry = get_zoo(m.preset) if m.preset and is_zoo(m.preset) else None
    seg_len = entry.segment_len if entry else m.segment["max"]
    per_item = get_task(m.task).make(np.random.default_rng(0), 1, seg_len).n_segments
    return TaskPlan(m.task, seg_len, per_item, max(200, -(-segments // per_item)), entry.metric if entry else "items")


def task_accuracy(pkg: Package, ref_rt: Any, cand_rt: Any, *, segments: int) -> TaskAccuracy | None:
    """Held-out task accuracy through both runtimes over >= ``segments`` segments: the two
    passes (the same episodes, each through its own runtime) run side by side, the reference's
    in a second thread; each pass runs on the threads its runtime was given (compare_precision:
    half the cores each)."""
    from memx.validation.accuracy import runtime_task_accuracy

    plan = task_plan(pkg, segments=segments)
    if plan is None:
        return None
    ref, cand = side_by_side(lambda: runtime_task_accuracy(ref_rt, plan.task, items=plan.items, segment_len=plan.segment_len),
                             lambda: runtime_task_accuracy(cand_rt, plan.task, items=plan.items, segment_len=plan.segment_len))
    return plan.result(ref, cand)


@dataclass
class DriftTally:
    """The per-segment curves of a precision check, one segment added at a time (reference first)."""

    logits: str | None  # the output whose top-1 agreement and KL are measured, if the package has logits
    lengths: np.ndarray  # (B,) real tokens per row
    drift_tol: float
    state_rel_error: dict[str, list[float]]  # float states only
    output_max_error: list[float] = field(default_factory=list)
    top1_agreement: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    first: dict[str, Any] | None = None  # the first state beyond drift_tol

    @classmethod
    def for_package(cls, m: Any, lengths: np.ndarray, drift_tol: float) -> "DriftTally":
        logits = next((o.name for o in m.outputs if o.name == "logits"), None)
        return cls(logits, lengths, drift_tol, {s.name: [] for s in m.state if s.dtype.startswith("float")})

    def add(self, d: int, out_r: dict[str, np.ndarray], state_r: dict[str, np.ndarray], out_c: dict[str, np.ndarray], state_c: dict[str, np.ndarray]) -> None:
        self.output_max_error.append(max(float(np.abs(out_r[k].astype(np.float64) - out_c[k]).max()) for k in out_r))
        if self.logits is not None:
            a, kl = _logit_metrics(out_r[self.logits], out_c[self.logits], self.lengths)
            self.top1_agreement.append(a)
            self.kl.append(kl)
        for name, curve in self.state_rel_error.items():
            e = _rel_error(state_r[name], state_c[name])
            curve.append(e)
            if self.first is None and e > self.drift_tol:
                self.first = {"segment": d, "state": name, "relative_error": e}


def compare_precision(
    package: str | os.PathLike | Package,
    *,
    against: str | os.PathLike = "torch",
    segments: int = 1024,
    batch: int = 4,
    seed: int = 0,
    drift_tol: float = 0.05,
    max_accuracy_drop: float = 1.0,
    min_top1_agreement: float = MIN_TOP1_AGREEMENT,
    max_kl: float = MAX_KL,
    with_task: bool = True,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    reference_options: dict[str, Any] | None = None,
    threads: ThreadSplit | None = None,
    reference_package_options: dict[str, Any] | None = None,
) -> DriftReport:
    """Drift and task accuracy of ``package`` (ONNX Runtime) against ``against``
    (``reference_package_options``: the ONNX Runtime options of a reference package).

    The reference runs in a second thread, up to REFERENCE_AHEAD segments ahead of the
    candidate, on the same segments in the same order, and the task accuracy's two passes run
    side by side (torch and ONNX Runtime release the GIL while they compute); ``threads``
    (default :func:`~memx.validation.sidebyside.thread_split`: half the cores each) says how
    they share the CPU cores."""
    from memx import runtimes
    from memx.progress import progress_range

    pkg = package if isinstance(package, Package) else Package.open(package)
    m = pkg.manifest
    backend_options, reference_options = dict(backend_options or {}), dict(reference_options or {})
    on_torch = str(against) == "torch"
    split = threads or thread_split("onnxruntime", "cpu", "torch" if on_torch else "onnxruntime", backend_options, reference_options if on_torch else {})
    if split.candidate is not None:
        backend_options["intra_op_threads"] = split.candidate
    ref_rt, ref_name = open_reference(pkg, against, reference_options, intra_op_threads=split.reference, package_options=reference_package_options)
    cand_rt = runtimes.open(pkg, backend="onnxruntime", **backend_options)
    seg = m.segment["max"]
    source = TaskSource(m.task, seg, causal=m.causal, vocab_size=m.vocab_size) if m.task else RandomSource(m.vocab_size)
    tokens = source.streams(batch, segments * seg, np.random.default_rng(seed))  # (B, segments * S)
    lengths = np.full(batch, seg, dtype=np.int64)
    ref_s, cand_s = ref_rt.stream(batch), cand_rt.stream(batch)
    tally = DriftTally.for_package(m, lengths, drift_tol)
    extra_rng = np.random.default_rng(seed + 1)  # values of the extra step inputs, if the package has any

    def inputs() -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:  # (tokens, extra inputs) of every segment, drawn in this thread in segment order
        for d in range(segments):
            yield tokens[:, d * seg : (d + 1) * seg], m.sample_inputs(extra_rng, batch, seg)

    def reference_step(d: int, feed: tuple[np.ndarray, dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # in the reference's thread
        chunk, extras = feed
        return ref_s.step(chunk, **extras), ref_s.state

    with torch_threads(split.torch if on_torch else None):
        with ReferenceAhead(inputs(), reference_step, segments) as ahead:
            for d in progress_range(segments, f"drift vs {ref_name}", enabled=progress):
                (chunk, extras), out_r, state_r = ahead.next()
                tally.add(d, out_r, state_r, cand_s.step(chunk, **extras), cand_s.state)
        acc = task_accuracy(pkg, ref_rt, cand_rt, segments=segments) if with_task else None
    return DriftReport(
        package=str(pkg.path), precision=m.precision, reference=ref_name, segments=segments, batch=batch, stream_source=source.describe(),
        drift_tol=drift_tol, output_max_error=tally.output_max_error, top1_agreement=tally.top1_agreement, kl=tally.kl,
        state_rel_error=tally.state_rel_error, first_divergence=tally.first, task_accuracy=acc, max_accuracy_drop=max_accuracy_drop, runtime=cand_rt.describe(),
        against=str(against), min_top1_agreement=min_top1_agreement, max_kl=max_kl,
    )


LITERAL = {"cpu_build": False, "graph_optimization": "basic"}  # the graphs as exported, no fusions: what their ops say, op by op


@dataclass
class CpuBuildCheck:
    """The CPU build (memx.runtimes.onnxruntime_build) against what ONNX Runtime runs without
    it, both measured against the graphs' literal meaning (the graphs as exported, basic
    optimization: no fusions). Fused kernels round differently, and in a Q/DQ graph a rounding
    difference of one ulp can move an activation to the next int8 step, which a memory carries
    on: ONNX Runtime's own fusions of the same graph already disagree with it that much. So the
    build passes when it is no further from the literal graphs than ONNX Runtime's own run of
    them: top-1 agreement at most ``top1_slack`` lower, KL at most ``kl_factor`` times higher
    (plus ``kl_floor``), task accuracy at most ``task_slack`` points lower; a package without
    logits: its largest output error and each state's largest relative error at most
    ``kl_factor`` times ONNX Runtime's own (plus ``error_floor``). A non-finite error fails."""

    exported: DriftReport  # the graphs as exported, ONNX Runtime's default fusions
    build: DriftReport  # the rewritten graphs
    top1_slack: float = 0.005
    kl_factor: float = 1.5
    kl_floor: float = 1e-6
    task_slack: float = 0.5
    error_floor: float = 1e-4

    def _numbers(self, r: DriftReport) -> tuple[float, float, float | None]:
        s = r.summary_numbers()
        return s["top1_agreement_mean"], s["kl_mean"], (100.0 * r.task_accuracy.candidate if r.task_accuracy is not None else None)

    def _errors(self, r: DriftReport) -> dict[str, float]:
        s = r.summary_numbers()
        return {"outputs": s["output_max_error"], **{f"state {k}": v for k, v in s["state_rel_error_max"].items()}}

    @property
    def has_logits(self) -> bool:
        return bool(self.build.top1_agreement)

    @property
    def passed(self) -> bool:
        errors_e, errors_b = self._errors(self.exported), self._errors(self.build)
        if not all(math.isfinite(v) for v in errors_b.values()) and all(math.isfinite(v) for v in errors_e.values()):
            return False
        if not self.has_logits:
            return all(errors_b[k] <= self.kl_factor * errors_e[k] + self.error_floor for k in errors_b)
        (t_e, kl_e, acc_e), (t_b, kl_b, acc_b) = self._numbers(self.exported), self._numbers(self.build)
        ok = t_b >= t_e - self.top1_slack and kl_b <= self.kl_factor * kl_e + self.kl_floor
        return ok and (acc_e is None or acc_b >= acc_e - self.task_slack)

    def verdict_line(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}: against the graphs' literal meaning over {self.build.segments} segments x {self.build.batch} streams, the build's"
        if not self.has_logits:
            e, b = self._errors(self.exported), self._errors(self.build)
            pairs = ", ".join(f"{k} {b[k]:.3g} vs {e[k]:.3g}" for k in b)
            return f"{head} largest errors {pairs} of ONNX Runtime's own run (allowed: {self.kl_factor:g}x + {self.error_floor:g})"
        (t_e, kl_e, acc_e), (t_b, kl_b, acc_b) = self._numbers(self.exported), self._numbers(self.build)
        task = f", task accuracy {acc_b:.2f}% vs {acc_e:.2f}%" if acc_e is not None else ""
        return (f"{head} top-1 agreement {t_b:.2%} vs {t_e:.2%} and KL {kl_b:.3g} vs {kl_e:.3g} of ONNX Runtime's own run{task} "
                f"(allowed: {self.top1_slack:.1%} lower, {self.kl_factor:g}x + {self.kl_floor:g} higher{f', {self.task_slack:g} points lower' if acc_e is not None else ''})")

    def to_record(self) -> dict[str, Any]:
        """What memx.json's ``onnxruntime_cpu.check`` keeps (a non-finite number as null: JSON has none)."""
        def finite(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        def numbers(r: DriftReport) -> dict[str, Any]:
            s = r.summary_numbers()
            return {"top1_agreement_mean": finite(s["top1_agreement_mean"]), "kl_mean": finite(s["kl_mean"]), "output_max_error": finite(s["output_max_error"]),
                    "state_rel_error_max": {k: finite(v) for k, v in s["state_rel_error_max"].items()},
                    **({"task_accuracy": r.task_accuracy.candidate} if r.task_accuracy else {})}
        return {"segments": self.build.segments, "batch": self.build.batch, "passed": self.passed, "verdict": self.verdict_line(),
                "against": "the graphs as exported, onnxruntime basic optimization (no fusions)", "exported": numbers(self.exported), "build": numbers(self.build)}


def compare_cpu_build(package: str | os.PathLike | Package, passes: tuple[str, ...] | list[str], *, segments: int = 256, batch: int = 4,
                      seed: int = 0, progress: bool = True) -> CpuBuildCheck:
    """The package with memx's ONNX Runtime graph passes (what `memx build --backend onnxruntime`
    writes) and as ONNX Runtime runs it without them, each against the graphs' literal meaning,
    on the CPU provider over ``segments`` segments of ``batch`` streams (see CpuBuildCheck)."""
    pkg = package if isinstance(package, Package) else Package.open(package)

    def against_literal(options: dict[str, Any]) -> DriftReport:
        return compare_precision(pkg, against=pkg.path, segments=segments, batch=batch, seed=seed, progress=progress,
                                 backend_options={"cpu_build": False, **options}, reference_package_options=LITERAL)

    return CpuBuildCheck(exported=against_literal({}), build=against_literal({"graph_passes": list(passes)}))


def cpu_build_check(*, segments: int = 256, batch: int = 4, progress: bool = True) -> Callable[[Package, tuple[str, ...]], dict[str, Any]]:
    """The ``check`` of memx.runtimes.onnxruntime_build.build_cpu: :func:`compare_cpu_build`;
    a BuildCheckError when the build fails it, else what the manifest records of it."""

    def check(pkg: Package, passes: tuple[str, ...]) -> dict[str, Any]:
        result = compare_cpu_build(pkg, passes, segments=segments, batch=batch, progress=progress)
        if not result.passed:
            raise BuildCheckError(f"the graphs rewritten for the CPU are further from {pkg.path.name}'s graphs than ONNX Runtime's own run of them",
                                  expected="no further than ONNX Runtime's own fusions", actual=result.verdict_line(),
                                  hint="build with fewer passes (--passes), or run the package as exported")
        return result.to_record()

    return check


def report_name(against: str) -> str:
    return "precision-vs-torch" if against == "torch" else f"precision-vs-{Path(against).name.replace('.', '_')}"


def save_report(pkg: Package, report: DriftReport, name: str) -> dict[str, str]:
    """Write reports/NAME.json (and NAME.png when matplotlib is installed) into the package."""
    folder = pkg.path / REPORTS_DIR
    folder.mkdir(exist_ok=True)
    from memx import __version__
    from memx.plotting import utc_now

    paths = {"json": f"{REPORTS_DIR}/{name}.json"}
    created = utc_now()
    data = {**report.to_dict(), "verdict": report.verdict_line(), "memx_version": __version__, "created": created}
    write_text_atomic(pkg.path / paths["json"], json.dumps(data, indent=1) + "\n")
    png = plot_drift(report, pkg.path / REPORTS_DIR / f"{name}.png", created=created)
    if png is not None:
        paths["png"] = f"{REPORTS_DIR}/{name}.png"
    report.reports = paths
    return paths


def plot_drift(report: DriftReport, path: Path, *, created: str | None = None) -> Path | None:
    """The drift figure (:func:`drift_figure`) as a PNG at ``path``; None without matplotlib."""
    fig = drift_figure(report, created=created)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def drift_figure(report: DriftReport, *, created: str | None = None) -> Any | None:
    """State relative error and top-1 agreement per segment; the title says the verdict and what
    it rests on (the task accuracy, else the logits' agreement and KL; never the state error,
    which is shown for information); stamped with the memx version, time and machine."""
    from memx import __version__
    from memx.plotting import pyplot, stamp, stamp_figure

    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    x = np.arange(1, report.segments + 1)
    for name, curve in report.state_rel_error.items():
        axes[0].plot(x, np.maximum(curve, 1e-9), label=name, linewidth=1)
    axes[0].axhline(report.drift_tol, color="red", linestyle="--", linewidth=0.8, label=f"drift tol {report.drift_tol:g} (marks the first divergence)")
    axes[0].set(xlabel="segment", ylabel="state relative error", yscale="log", title="memory drift (informational, not the gate)")
    axes[0].legend(fontsize=7, ncol=2)
    if report.top1_agreement:
        _plot_agreement(axes[1], x, report)
    else:
        axes[1].set_axis_off()
    fig.suptitle(f"{report.verdict_line()}\n{report.precision} vs {report.reference}, {report.segments} segments x {report.batch} streams",
                 fontsize=9, color="green" if report.passed else "red")
    stamp_figure(fig, stamp(__version__, created=created))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _plot_agreement(ax: Any, x: np.ndarray, report: DriftReport) -> None:
    """Top-1 agreement per segment and its rolling mean; the gate's bound when the logits decide."""
    agree = np.asarray(report.top1_agreement)
    window = max(1, min(25, len(agree) // 10))
    smooth = np.convolve(agree, np.ones(window) / window, mode="valid")  # rolling mean
    ax.plot(x, agree, linewidth=0.5, alpha=0.3, label="per segment")
    ax.plot(x[window - 1 :], smooth, linewidth=1.5, label=f"mean of {window}")
    low = min(0.9, float(agree.min()) - 0.01)
    if report.gate == "logits":
        ax.axhline(report.min_top1_agreement, color="red", linestyle="--", linewidth=0.8, label=f"gate: mean over all >= {report.min_top1_agreement:.0%}")
        low = min(low, report.min_top1_agreement - 0.01)
    ax.legend(fontsize=7, loc="lower left")
    ax.set(xlabel="segment", ylabel="top-1 agreement", ylim=(low, 1.001),
           title="logits: top-1 agreement" + (" (the gate)" if report.gate == "logits" else " (informational)"))
