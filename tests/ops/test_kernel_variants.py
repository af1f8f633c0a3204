"""libmemx_ops carries two builds of the kernel (portable loops, AVX2/FMA) and picks one at run
time: both must give the reference's answer, and the portable one must be reachable on a CPU
that has AVX2 (MEMX_OPS_KERNEL=portable), or nobody would ever run it before a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, numpy as np, torch
from tests.ops.test_custom_op import CONFIGS, _case, _ort, _single_op_model
from memx.ops.library import describe_library, find_library
out = {"describe": np.array(describe_library(find_library()))}
for n, (pattern, window, causal, memory) in enumerate(CONFIGS):
    model = _single_op_model(pattern, window, causal, memory > 0, 8)
    rng = np.random.default_rng([n, window, memory])
    for i in range(3):
        q, k, v, lengths, mem = _case(rng, memory=memory)
        feeds = dict(zip(["q", "k", "v", "lengths", "mem_k", "mem_v"], (q, k, v, lengths, *mem)))
        t = [torch.from_numpy(a) for a in (q, k, v, lengths, *mem)]
        out[f"{n}-{i}-ref"] = torch.ops.memx.local_global_attention(t[0], t[1], t[2], t[3], t[4] if mem else None, t[5] if mem else None, pattern, window, causal).numpy()
        out[f"{n}-{i}-kernel"] = _ort(model, feeds, kernel=True)
np.savez(sys.argv[1], **out)
"""


def _kernel_outputs(tmp_path: Path, variant: str | None) -> dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k != "MEMX_OPS_KERNEL"}
    if variant:
        env["MEMX_OPS_KERNEL"] = variant
    target = tmp_path / f"{variant or 'auto'}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(target)], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, check=True, timeout=300)
    with np.load(target) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.kernels
def test_portable_and_dispatched_kernels_both_equal_the_reference(tmp_path):
    auto, portable = _kernel_outputs(tmp_path, None), _kernel_outputs(tmp_path, "portable")
    assert str(portable["describe"]).endswith("kernel portable)")
    if os.uname().machine == "x86_64" and "avx2" in Path("/proc/cpuinfo").read_text():
        assert str(auto["describe"]).endswith("kernel avx2+fma)")
    cases = sorted(k[: -len("-ref")] for k in auto if k.endswith("-ref"))
    assert len(cases) == 30
    for case in cases:
        for outputs in (auto, portable):
            np.testing.assert_allclose(outputs[f"{case}-kernel"], outputs[f"{case}-ref"], atol=1e-5, rtol=0, err_msg=case)
        np.testing.assert_allclose(portable[f"{case}-kernel"], auto[f"{case}-kernel"], atol=1e-5, rtol=0, err_msg=case)
