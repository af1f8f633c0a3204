"""record(pkg, report): every kind of report lands in the manifest under its own key, a second
result of one key replaces the first, and other keys and the package's files are left alone."""

from __future__ import annotations

import shutil

from memx.package.files import Package
from memx.validation import compare_precision, record, validate


def test_parity_and_drift_reports_are_kept_under_their_keys(package_of, tmp_path):
    pkg = Package.open(shutil.copytree(package_of("rmt-tiny").path, tmp_path / "pkg"))
    files_before = {k: v.sha256 for k, v in pkg.manifest.files.items()}

    parity = validate(pkg, segments=6, batch=2, progress=False)
    assert record(pkg, parity) == "onnxruntime:cpu"
    drift = compare_precision(pkg, segments=5, batch=2, with_task=False, progress=False)
    assert record(pkg, drift) == "precision:precision-vs-torch"

    again = Package.open(pkg.path)  # what a fresh process reads
    kept = again.manifest.validation
    assert set(kept) == {"onnxruntime:cpu", "precision:precision-vs-torch"}
    assert kept["onnxruntime:cpu"]["segments"] == 6 and kept["onnxruntime:cpu"]["passed"] is True
    assert kept["precision:precision-vs-torch"]["segments"] == 5
    assert "top1_agreement" not in kept["precision:precision-vs-torch"]  # curves stay in the report files
    assert {k: v.sha256 for k, v in again.manifest.files.items()} == files_before

    longer = validate(pkg, segments=9, batch=2, progress=False)
    record(pkg, longer)
    kept = Package.open(pkg.path).manifest.validation
    assert kept["onnxruntime:cpu"]["segments"] == 9 and kept["precision:precision-vs-torch"]["segments"] == 5
