"""Limits both manifest and snapshot readers apply before parsing (the C++ twins are in
cpp/runtime/src/limits.hpp): bounded JSON nesting (a deeply nested memx.json must be a typed
error, not a RecursionError or a stack overflow), bounded manifest size, regular files only
(a FIFO named memx.json must not hang the reader)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_JSON_DEPTH = 64  # memx writes depth <= 6; a user's config nests a few levels more
MAX_MANIFEST_BYTES = 64 << 20
MAX_BATCH = 1 << 16  # the batch dimension's upper bound in exported graphs (memx.exporter.to_onnx); snapshots too


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    depth = deepest = 0
    in_string = escaped = False
    for c in data:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif c in (0x5D, 0x7D):
            depth -= 1
    return deepest


def regular_file_size(path: Path, what: str, error: type[Exception], *, limit: int) -> int:
    """The size of ``path`` if it is a regular file of at most ``limit`` bytes (symlinks are
    followed); else ``error`` naming what was found."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} is missing", expected=str(path), actual="missing file") from None
    except OSError as e:
        raise error(f"{what} cannot be read", expected="a readable regular file", actual=f"{type(e).__name__}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or other special file"
        raise error(f"{what} is not a regular file", expected="a regular file", actual=kind)
    if st.st_size > limit:
        raise error(f"{what} is too large", expected=f"at most {limit} bytes", actual=f"{st.st_size} bytes")
    return st.st_size
