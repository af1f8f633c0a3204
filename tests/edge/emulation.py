"""Where the aarch64 build (`make cpp-aarch64`) and its emulator live, for tests/edge.

aarch64 binaries run here under qemu-user with the cross sysroot. The emulated CPU is a
Cortex-A76: ARMv8.2-A like Jetson Orin's Cortex-A78AE (qemu models no A78), and without SVE —
qemu's default `max` CPU has SVE, which ONNX Runtime then uses and qemu emulates ~20x slower.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPS = ROOT / ".deps" / "aarch64"
INSTALL = ROOT / "build" / "aarch64" / "install"
QEMU = DEPS / "qemu" / "qemu-aarch64"
SYSROOT = DEPS / "sysroot"
EMULATED_CPU = "cortex-a76"


def emulator() -> tuple[str, ...]:
    """The command prefix that runs an aarch64 binary built here."""
    return (str(QEMU), "-cpu", EMULATED_CPU, "-L", str(SYSROOT))


def missing() -> str | None:
    """Why the emulated tests cannot run, or None when they can."""
    for path, what in ((QEMU, "qemu-aarch64"), (SYSROOT / "lib" / "ld-linux-aarch64.so.1", "the aarch64 sysroot"),
                       (INSTALL / "bin" / "memx-run", "the aarch64 memx-run"), (INSTALL / "lib" / "libmemx_ops.so", "the aarch64 libmemx_ops")):
        if not path.exists():
            return f"needs {what} ({path.relative_to(ROOT)} missing: run `make cpp-aarch64`)"
    return None
