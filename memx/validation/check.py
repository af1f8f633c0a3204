"""What ``memx validate`` runs on a package: the check its precision calls for, recorded."""

from __future__ import annotations

import os
from typing import Any

from memx.package.files import Package
from memx.validation.drift import MAX_KL, MIN_TOP1_AGREEMENT, DriftReport, compare_precision, report_name, save_report
from memx.validation.parity import ParityReport, validate
from memx.validation.recording import record as record_report

PARITY_SEGMENTS = 256  # fp32 parity: long enough for drift one step cannot show
DRIFT_SEGMENTS = 1024  # quantized packages: rounding error accumulates in the memory


def check_package(
    package: str | os.PathLike | Package,
    *,
    backend: str = "onnxruntime",
    device: str = "cpu",
    against: str | None = None,
    segments: int | None = None,
    batch: int = 4,
    atol: float = 1e-4,
    seed: int = 0,
    drift_tol: float = 0.05,
    max_accuracy_drop: float = 1.0,
    min_top1_agreement: float = MIN_TOP1_AGREEMENT,
    max_kl: float = MAX_KL,
    backend_options: dict[str, Any] | None = None,
    reference_options: dict[str, Any] | None = None,
    record: bool = True,
    progress: bool = True,
    teacher_forced: bool = False,
    verify: bool = True,
) -> ParityReport | DriftReport:
    """fp32 packages (without ``against``): parity of ``backend`` with PyTorch, outputs and
    states within ``atol``, over ``segments`` (default 256). Quantized packages, or any with
    ``against`` ("torch" or an fp32 package of the same model): drift and task accuracy over
    ``segments`` (default 1024), the report's JSON and plot saved in the package's reports/;
    it passes on the task accuracy drop, or, without a task, on top-1 agreement and KL.
    With ``record`` the result is kept in the manifest (:func:`memx.validation.record`).
    ``reference_options`` say where the PyTorch reference comes from (memx.models.reference);
    a torch candidate gets them too. ``verify`` (default) refuses a package whose files do not
    match their sha256 before anything runs."""
    pkg = package if isinstance(package, Package) else Package.open(package, verify=verify)
    if against is None and pkg.manifest.precision != "fp32":
        against = "torch"
    report: ParityReport | DriftReport
    if backend == "torch" and reference_options:
        backend_options = {**reference_options, **(backend_options or {})}
    if against is None:
        report = validate(pkg, backend=backend, device=device, segments=segments or PARITY_SEGMENTS, batch=batch, atol=atol, seed=seed,
                          backend_options=backend_options, reference_options=reference_options, progress=progress,
                          teacher_forced=teacher_forced)
    else:
        report = compare_precision(pkg, against=against, segments=segments or DRIFT_SEGMENTS, batch=batch, seed=seed, drift_tol=drift_tol,
                                   max_accuracy_drop=max_accuracy_drop, min_top1_agreement=min_top1_agreement,
                                   max_kl=max_kl, backend_options=backend_options, reference_options=reference_options, progress=progress)
        save_report(pkg, report, report_name(against))
    if record:
        record_report(pkg, report)
    return report
