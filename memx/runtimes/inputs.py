"""Validation of step inputs against the manifest; every failure is a typed memx error."""

from __future__ import annotations

from typing import Any

import numpy as np

from memx.errors import BatchMismatchError, DTypeError, InputError, NonFiniteStateError, RankError, SegmentLengthError, TokenRangeError


def as_array(value: Any, name: str) -> np.ndarray:
    """numpy arrays pass through; lists and torch tensors are converted (no copy when possible)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception:
        raise DTypeError(f"{name} is not array-like", expected="numpy array", actual=type(value).__name__) from None


def check_tokens(tokens: Any, *, batch: int | None, vocab_size: int, segment: dict[str, int]) -> np.ndarray:
    """tokens -> int64 (B, S). A 1-D array is one row when the stream has batch 1."""
    arr = as_array(tokens, "tokens")
    if arr.dtype.kind not in "iu":
        raise DTypeError("tokens must be integer token ids", expected="int64 (or another integer dtype)", actual=str(arr.dtype))
    if arr.ndim == 1 and batch == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise RankError("tokens must be 2-D [batch, segment]", expected="rank 2" + (" (or 1 for a batch-1 stream)" if batch == 1 else ""), actual=f"rank {arr.ndim} with shape {list(arr.shape)}")
    if batch is not None and arr.shape[0] != batch:
        raise BatchMismatchError("tokens batch size differs from the stream's", expected=batch, actual=arr.shape[0])
    s = arr.shape[1]
    if not segment["min"] <= s <= segment["max"]:
        raise SegmentLengthError("segment length outside what the package allows", expected=f"{segment['min']}..{segment['max']} tokens", actual=s)
    # one reduction: seen as unsigned, a negative id is larger than any vocabulary
    if arr.size and int(arr.view(f"u{arr.dtype.itemsize}").max()) >= vocab_size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            where = np.argwhere(arr == bad)[0].tolist()
            raise TokenRangeError("token id outside the vocabulary", expected=f"0..{vocab_size - 1}", actual=f"{int(bad)} at [row, position] {where}")
    return arr.astype(np.int64, copy=False)


def check_lengths(lengths: Any, *, batch: int, segment_len: int) -> np.ndarray:
    if lengths is None:
        return np.full((batch,), segment_len, dtype=np.int64)
    arr = as_array(lengths, "lengths")
    if arr.ndim == 0 and batch == 1:
        arr = arr.reshape(1)
    if arr.dtype.kind not in "iu":
        raise DTypeError("lengths must be integers", expected="int64", actual=str(arr.dtype))
    if arr.shape != (batch,):
        raise BatchMismatchError("lengths must have one entry per row", expected=[batch], actual=list(arr.shape))
    if arr.size and (arr.min() < 0 or arr.max() > segment_len):
        raise InputError("lengths out of range", expected=f"0..{segment_len} (the segment length)", actual=arr.tolist())
    return arr.astype(np.int64, copy=False)


def check_reset(reset: Any, *, batch: int) -> np.ndarray:
    if reset is None:
        return np.zeros((batch,), dtype=bool)
    arr = as_array(reset, "reset")
    if arr.ndim == 0 and batch == 1:
        arr = arr.reshape(1)
    if arr.dtype != np.bool_:
        raise DTypeError("reset must be boolean", expected="bool", actual=str(arr.dtype))
    if arr.shape != (batch,):
        raise BatchMismatchError("reset must have one entry per row", expected=[batch], actual=list(arr.shape))
    return arr


def reset_selection(rows: Any, batch: int) -> np.ndarray:
    """Stream.reset's ``rows`` (None: all) -> bool (B,) of the rows to restart."""
    sel = np.ones(batch, dtype=bool)
    if rows is None:
        return sel
    sel[:] = False
    idx = np.asarray(rows, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -batch or idx.max() >= batch):
        raise InputError("reset row out of range", expected=f"0..{batch - 1}", actual=idx.tolist())
    sel[idx] = True
    return sel


def non_finite_state_error(name: str, arr: np.ndarray) -> NonFiniteStateError:
    """The error for a new state holding NaN/Inf, naming its rows."""
    rows = sorted(set(np.argwhere(~np.isfinite(arr))[:, 0].tolist()))
    return NonFiniteStateError(f"step produced NaN/Inf in state {name!r}; state left unchanged", expected="finite values", actual=f"non-finite in rows {rows}")
