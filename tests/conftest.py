"""Shared fixtures: packages exported once per test session, cached by preset."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from memx.exporter import Package, export_preset


@pytest.fixture(scope="session")
def package_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Package]:
    """package_of("rmt-tiny") -> an exported package (shared: copy it before modifying)."""
    cache: dict[str, Package] = {}

    def get(preset: str) -> Package:
        if preset not in cache:
            out = tmp_path_factory.mktemp(preset) / f"{preset}.memx"
            cache[preset] = export_preset(preset, out, verify_segments=0)
        return cache[preset]

    return get


@pytest.fixture
def private_copy(tmp_path: Path, package_of: Callable[[str], Package]) -> Callable[[str], Path]:
    """A copy of a preset's package that a test may alter."""

    def copy(preset: str) -> Path:
        dst = tmp_path / f"{preset}-copy.memx"
        shutil.copytree(package_of(preset).path, dst)
        return dst

    return copy
