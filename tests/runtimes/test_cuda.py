"""GPU paths of the existing backends (skip with a reason without a CUDA GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from memx.validation import validate
from memx.zoo import zoo_entries

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


ZOO_NAMES = [e.name for e in zoo_entries()]


def _cuda_or_skip():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")


def _compare_over_256_segments(pkg, gpu_stream, atol=1e-4):
    """A GPU stream against the CPU ONNX Runtime stream: every output each step and the final state."""
    cpu = runtimes.open(pkg, backend="onnxruntime").stream(2)
    rng = np.random.default_rng(1)
    seg = pkg.manifest.segment["max"]
    for i in range(256):
        x = rng.integers(0, pkg.manifest.vocab_size, size=(2, seg))
        lens = rng.integers(1, seg + 1, size=2)
        want, got = cpu.step(x, lens), gpu_stream.step(x, lens)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=atol, err_msg=f"{k} at segment {i}")
    for k, v in cpu.state.items():
        np.testing.assert_allclose(gpu_stream.state[k], v, atol=atol, err_msg=f"state {k}")


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_torch_cuda_resident_stream_matches_cpu_over_256_segments(name, graphs, package_of):
    _cuda_or_skip()
    pkg = package_of(name)
    s = runtimes.open(pkg, backend="torch", device="cuda", cuda_graphs=graphs).stream(2)
    assert isinstance(s, runtimes.ResidentStream)
    _compare_over_256_segments(pkg, s)
    if graphs:
        assert s.graphs.captures >= 2  # one per parity at least


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_onnxruntime_gpu_providers_keep_state_on_the_device(device, package_of):
    import onnxruntime

    provider = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[device]
    if provider not in onnxruntime.get_available_providers():
        pytest.skip(f"this onnxruntime has no {provider} (install onnxruntime-gpu)")
    pkg = package_of("rmt-tiny")
    s = runtimes.open(pkg, backend="onnxruntime", device=device).stream(2)
    assert isinstance(s, runtimes.ResidentStream) and s.device.kind == "cuda"
    _compare_over_256_segments(pkg, s)
