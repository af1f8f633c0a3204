"""The NEON kernel of the aarch64 libmemx_ops (Jetson's CPU) against the scalar loops and torch's
reference, run here under qemu-user: memx-ops-check, cross-built by `make cpp-aarch64`, calls
memx::neon and memx::baseline side by side on the cases of tests/ops/test_kernel_variants.py
(CONFIGS of tests/ops/test_custom_op.py plus wider heads and longer rows).

qemu runs the real aarch64 instructions (FMLA, FRINTN, FCVTNS ...) with their IEEE results, so
the numbers here are the device's; its timings are not (see benchmarks/kernel_variants.py).
"""

from __future__ import annotations

import pytest

from tests.edge.emulation import QEMU, ROOT, SYSROOT, emulator
from tests.ops.test_kernel_variants import assert_check_report, assert_refuses_truncated_input, run_check, write_check_cases

pytestmark = pytest.mark.aarch64
HARNESS = ROOT / "build" / "aarch64" / "ops" / "memx-ops-check"


@pytest.fixture(scope="module")
def emulated() -> list[str]:
    """The command line that runs the aarch64 memx-ops-check here."""
    missing = [str(p) for p in (HARNESS, QEMU, SYSROOT) if not p.exists()]
    if missing:
        pytest.skip(f"needs `make cpp-aarch64` (the aarch64 memx-ops-check, qemu-aarch64 and the sysroot); missing: {', '.join(missing)}")
    return [*emulator(), str(HARNESS)]


def test_neon_and_baseline_equal_the_reference_and_each_other(tmp_path, emulated):
    names = write_check_cases(tmp_path)
    report = run_check(emulated, tmp_path)
    assert_check_report(report, names, "aarch64", "neon")  # the NEON variant really ran, in an aarch64 binary
    assert report["variants"][0]["name"] == "neon"  # what MemxOpsDescribe says on the device


def test_harness_refuses_a_truncated_array(tmp_path, emulated):
    write_check_cases(tmp_path)
    assert_refuses_truncated_input(emulated, tmp_path)
