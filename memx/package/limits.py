"""Limits both manifest and snapshot readers apply before parsing (the C++ twins are in
cpp/runtime/src/limits.hpp): bounded JSON nesting (a deeply nested memx.json must be a typed
error, not a RecursionError or a stack overflow), bounded manifest size, regular files only
(a FIFO named memx.json must not hang the reader)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

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


# JSON read the way libmemx reads it (nlohmann::json), so both readers see the same values and
# compute the same model id: no NaN/Infinity, no number that overflows a double, integers past
# the 64-bit range read as doubles, no lone UTF-16 surrogate in a string.
INT_RANGE = (-(1 << 63), (1 << 64) - 1)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _json_int(text: str) -> int | float:
    value = int(text)
    return value if INT_RANGE[0] <= value <= INT_RANGE[1] else _json_float(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number overflow parsing {text[:40]!r}")
    return value


def _check_text(node: Any) -> None:
    """Refuse a string (or key) holding a lone surrogate: it is not Unicode text."""
    if isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"a string holds a lone UTF-16 surrogate: {node[:40]!r}") from None
    elif isinstance(node, dict):
        for key, value in node.items():
            _check_text(key)
            _check_text(value)
    elif isinstance(node, list):
        for value in node:
            _check_text(value)


def strict_json_loads(text: str) -> Any:
    """json.loads as libmemx parses JSON (see above); ValueError (json.JSONDecodeError among them) when it would refuse."""
    data = json.loads(text, parse_constant=_not_json, parse_int=_json_int, parse_float=_json_float)
    _check_text(data)
    return data
