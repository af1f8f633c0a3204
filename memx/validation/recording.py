"""Keeping a validation result in its package: one function for every kind of report."""

from __future__ import annotations

from typing import Any, Protocol

from memx.package.files import Package, record_validation


class Recordable(Protocol):
    """A report that knows its manifest key and what of it the manifest keeps."""

    @property
    def validation_key(self) -> str: ...

    def to_record(self) -> dict[str, Any]: ...


def record(pkg: Package, report: Recordable) -> str:
    """Write ``report`` into ``pkg``'s manifest under its key (replacing an earlier result of
    that key; the manifest is rewritten atomically) and return the key."""
    key = report.validation_key
    record_validation(pkg, key, report.to_record())
    return key
