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


@pytest.fixture(scope="session")
def quantized(package_of: Callable[[str], Package], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Package]:
    """quantized(zoo name, method, state precision) -> package, made once per test session (shared: copy it before modifying)."""
    from memx.calibration import quantize_package

    cache: dict[tuple, Package] = {}

    def get(name: str, method: str, state: str = "fp32", **kwargs: object) -> Package:
        key = (name, method, state, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("q") / f"{name}-{method}-{state}.memx"
            cache[key] = quantize_package(package_of(name), out, method=method, state_precision=state, calib_segments=48, progress=False, **kwargs).package
        return cache[key]

    return get


@pytest.fixture
def private_copy(tmp_path: Path, package_of: Callable[[str], Package]) -> Callable[[str], Path]:
    """A copy of a preset's package that a test may alter."""

    def copy(preset: str) -> Path:
        dst = tmp_path / f"{preset}-copy.memx"
        shutil.copytree(package_of(preset).path, dst)
        return dst

    return copy


def _missing(marker: str) -> str | None:
    """Why tests with ``marker`` cannot run here, or None when they can."""
    import importlib.util
    import shutil as sh

    if marker == "gpu":
        import torch

        return None if torch.cuda.is_available() else "needs a CUDA GPU (torch.cuda.is_available() is False)"
    if marker == "tensorrt":
        return None if importlib.util.find_spec("tensorrt") else "needs TensorRT (module 'tensorrt' not installed)"
    if marker == "trt_parser":
        found = importlib.util.find_spec("tensorrt") or importlib.util.find_spec("tensorrt_rtx_bindings")
        return None if found else "needs a TensorRT ONNX parser (neither 'tensorrt' nor 'tensorrt_rtx_bindings' is installed)"
    if marker == "kernels":
        from memx.ops.library import library_status

        path, why = library_status()
        return None if path else f"needs libmemx_ops: {why}"
    if marker == "triton":
        return None if sh.which("tritonserver") else "needs a Triton Inference Server ('tritonserver' not on PATH)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker in ("gpu", "tensorrt", "triton", "kernels", "trt_parser"):
            if item.get_closest_marker(marker):
                if marker not in reasons:
                    reasons[marker] = _missing(marker)
                if reasons[marker]:
                    item.add_marker(pytest.mark.skip(reason=reasons[marker]))
