"""Where the C++ kernel library (libmemx_ops, built from cpp/ops by `make ops`) lives.

Looked up in order: the ``MEMX_OPS_LIBRARY`` environment variable, then ``memx/ops/lib/``
(where the build puts it). The onnxruntime backend registers it for packages that use memx
ops; without it ONNX Runtime runs each op's model-local reference body.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

LIBRARY_NAME = "libmemx_ops.so"
ENV_VAR = "MEMX_OPS_LIBRARY"
BUILD_HINT = "build it with `make ops` (CMake + g++; fetches the ONNX Runtime headers once)"


def default_library_path() -> Path:
    return Path(__file__).parent / "lib" / LIBRARY_NAME


def find_library() -> Path | None:
    """The kernel library to use, or None when there is none."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env) if Path(env).is_file() else None
    path = default_library_path()
    return path if path.is_file() else None


def library_status() -> tuple[Path | None, str]:
    """(path, why): the library found, or None with the reason in words."""
    env = os.environ.get(ENV_VAR)
    if env and not Path(env).is_file():
        return None, f"{ENV_VAR}={env} is not a file"
    path = find_library()
    if path is None:
        return None, f"{LIBRARY_NAME} not found in {default_library_path().parent}; {BUILD_HINT}"
    return path, f"{path}"


def describe_library(path: Path) -> str:
    """What the library provides and which kernel variant it runs on this CPU (its
    ``MemxOpsDescribe``), e.g. "memx 1: LocalGlobalAttention (...; kernel avx2+fma)"."""
    lib = ctypes.CDLL(str(path))
    describe = lib.MemxOpsDescribe
    describe.restype = ctypes.c_char_p
    return describe().decode()
