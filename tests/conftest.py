"""Shared fixtures: packages exported once per test run (tests/package_cache.py), skip
reasons for the hardware markers, and per-directory timings for `make test`'s phase table."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pytest

from memx.exporter import Package
from tests import package_cache


def _limit_threads(n: int) -> None:
    """One pytest-xdist worker per core: torch and every ONNX Runtime session get ``n`` threads
    (ORT's default is one per physical core, and its spinning threads starve a second worker)."""
    import onnxruntime as ort
    import torch

    torch.set_num_threads(n)
    base = ort.InferenceSession

    class ThreadLimitedSession(base):  # type: ignore[misc, valid-type]
        def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
            options = sess_options if sess_options is not None else ort.SessionOptions()
            if options.intra_op_num_threads == 0:
                options.intra_op_num_threads = n
            if options.inter_op_num_threads == 0:
                options.inter_op_num_threads = 1
            super().__init__(path_or_bytes, options, providers, provider_options, **kwargs)

    ort.InferenceSession = ThreadLimitedSession


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get("MEMX_TEST_THREADS")
    if threads:
        _limit_threads(int(threads))


@pytest.fixture(scope="session")
def package_of() -> Callable[[str], Package]:
    """package_of("rmt-tiny") -> an exported package (shared: copy it before modifying)."""
    return package_cache.exported


@pytest.fixture(scope="session")
def quantized(package_of: Callable[[str], Package]) -> Callable[..., Package]:
    """quantized(zoo name, method, state precision) -> package, made once per test run (shared: copy it before modifying)."""
    return package_cache.quantized


@pytest.fixture(scope="session")
def reference_rollouts():
    """The PyTorch reference's runs, shared by parity checks of the same model and streams."""
    from memx.validation import ReferenceRollouts

    return ReferenceRollouts()


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
    if marker == "triton":  # the client in this env; the server in memx's server env, made by the launcher (pip) when absent
        if not importlib.util.find_spec("tritonclient"):
            return "needs the Triton client (pip install 'memx-toolkit[serving]'); the server comes from memx's server env"
        return None
    if marker == "cpp":
        from tests.cpp.test_cpp_parity import memx_run

        return None if memx_run().is_file() else f"needs memx-run ({memx_run()} not built: run `make cpp`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker in ("gpu", "tensorrt", "triton", "kernels", "trt_parser", "cpp"):
            if item.get_closest_marker(marker):
                if marker not in reasons:
                    reasons[marker] = _missing(marker)
                if reasons[marker]:
                    item.add_marker(pytest.mark.skip(reason=reasons[marker]))


# --- per-directory timings: `make test` sets MEMX_TEST_TIMES and prints them in its phase table
_TIMES: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "tests": 0})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sum setup + call + teardown per test directory (on the xdist controller: every worker's reports)."""
    directory = str(Path(report.nodeid.split("::")[0]).parent)
    _TIMES[directory]["seconds"] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _TIMES[directory]["tests"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get("MEMX_TEST_TIMES")
    if out and not hasattr(session.config, "workerinput"):  # the controller (or a plain run) writes
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(dict(sorted(_TIMES.items())), indent=1))
