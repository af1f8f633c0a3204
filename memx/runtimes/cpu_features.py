"""What this CPU's integer kernels do, read without importing onnx (opening a CPU build asks)."""

from __future__ import annotations


def uses_vpmaddubsw() -> bool:
    """True on an x86 CPU whose int8 kernels saturate (AVX2/AVX-512 without VNNI): there the
    CPU build should take ``int8-matmul-u8u8``; False elsewhere (VNNI, ARM, unknown)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool(flags) and not {"avx512_vnni", "avx_vnni"} & set(flags)
