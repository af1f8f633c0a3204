"""GPU paths of the existing backends (skip with a reason without a CUDA GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from memx.exporter import validate

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["rmt-tiny", "memctrl-tiny", "membottleneck-tiny", "rmt-enc-tiny", "gmat-tiny", "gmat-causal-tiny", "gmat-nomem-tiny", "gmat-compress-tiny"])
def test_torch_cuda_matches_cpu_reference_over_256_segments(name, package_of):
    report = validate(package_of(name), backend="torch", device="cuda", segments=256, atol=1e-4, progress=False)
    assert report.passed, report.summary()


def test_cuda_stream_snapshot_restores_on_cpu(package_of):
    pkg = package_of("rmt-tiny")
    gpu = runtimes.open(pkg, backend="torch", device="cuda").stream(2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        gpu.step(rng.integers(0, 64, size=(2, 16)))
    cpu = runtimes.open(pkg, backend="onnxruntime").stream(2)
    cpu.restore(gpu.snapshot())
    x = rng.integers(0, 64, size=(2, 16))
    np.testing.assert_allclose(gpu.step(x)["logits"], cpu.step(x)["logits"], atol=1e-5)
