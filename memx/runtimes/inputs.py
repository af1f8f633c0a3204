"""Validation of step inputs against the manifest; every failure is a typed memx error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from memx.errors import BatchMismatchError, DTypeError, InputError, NonFiniteStateError, RankError, SegmentLengthError, TokenRangeError
from memx.package.limits import MAX_BATCH  # the batch dimension's upper bound, shared with snapshots
from memx.package.manifest import concrete_shape

if TYPE_CHECKING:
    from memx.package.manifest import InputInfo

NO_EXTRAS: Mapping[str, np.ndarray] = {}


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




def check_count(value: Any, name: str, *, high: int = MAX_BATCH) -> int:
    """A batch size or pool capacity: an integer (not a bool, float or string) in 1..high."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DTypeError(f"{name} must be an integer", expected="int", actual=f"{type(value).__name__} {value!r}")
    if not 1 <= int(value) <= high:
        raise InputError(f"{name} out of range", expected=f"1..{high}", actual=int(value))
    return int(value)


def reset_selection(rows: Any, batch: int) -> np.ndarray:
    """Stream.reset's ``rows`` (None: all; a row index, indices, or a bool mask of B) -> bool (B,)."""
    sel = np.ones(batch, dtype=bool)
    if rows is None:
        return sel
    arr = as_array(rows, "rows")
    if arr.dtype == np.bool_:  # a mask, not the indices 0 and 1
        if arr.shape != (batch,):
            raise BatchMismatchError("a reset mask needs one entry per row", expected=[batch], actual=list(arr.shape))
        return arr.copy()
    if arr.dtype.kind not in "iu":
        raise DTypeError("reset rows must be integer row indices or a bool mask", expected=f"ints in 0..{batch - 1} or bool ({batch},)", actual=f"{arr.dtype} {arr.tolist()}")
    idx = arr.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < -batch or idx.max() >= batch):
        raise InputError("reset row out of range", expected=f"0..{batch - 1}", actual=idx.tolist())
    sel[:] = False
    sel[idx] = True
    return sel


def non_finite_state_error(name: str, arr: np.ndarray) -> NonFiniteStateError:
    """The error for a new state holding NaN/Inf, naming its rows."""
    rows = sorted(set(np.argwhere(~np.isfinite(arr))[:, 0].tolist()))
    return NonFiniteStateError(f"step produced NaN/Inf in state {name!r}; state left unchanged", expected="finite values", actual=f"non-finite in rows {rows}")


def extra_shape(info: "InputInfo", batch: int, segment_len: int) -> tuple[int, ...]:
    """An extra input's concrete shape for one step."""
    return concrete_shape(info.shape, batch, segment_len)


def _dtype_fits(arr: np.ndarray, dtype: str) -> bool:
    if dtype == "bool":
        return arr.dtype == np.bool_
    if dtype.startswith(("int", "uint")):
        return arr.dtype.kind in "iu"
    return arr.dtype.kind == "f"


def check_extra(value: Any, info: "InputInfo", *, batch: int, segment_len: int) -> np.ndarray:
    """One extra input -> its declared dtype and shape; integers inside their range."""
    arr = as_array(value, info.name)
    want = extra_shape(info, batch, segment_len)
    if batch == 1 and arr.ndim == len(want) - 1:
        arr = arr[None]
    if not _dtype_fits(arr, info.dtype):
        raise DTypeError(f"extra input {info.name!r} has the wrong dtype", expected=info.dtype, actual=str(arr.dtype))
    if arr.ndim != len(want):
        raise RankError(f"extra input {info.name!r} has the wrong rank", expected=f"rank {len(want)} {info.shape}", actual=f"rank {arr.ndim} with shape {list(arr.shape)}")
    if arr.shape[0] != batch:
        raise BatchMismatchError(f"extra input {info.name!r} batch size differs from the stream's", expected=batch, actual=arr.shape[0])
    if tuple(arr.shape) != want:
        raise InputError(f"extra input {info.name!r} has the wrong shape", expected=f"{list(want)} ({info.shape}, segment {segment_len})", actual=list(arr.shape))
    if info.range is not None and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.range[0] or hi >= info.range[1]:
            bad = lo if lo < info.range[0] else hi
            raise TokenRangeError(f"extra input {info.name!r} has a value outside its range", expected=f"{info.range[0]}..{info.range[1] - 1}",
                                  actual=f"{bad} at {np.argwhere(arr == bad)[0].tolist()}")
    if info.dtype != "bool" and info.dtype.startswith(("float", "bfloat")) and not np.isfinite(arr).all():
        raise InputError(f"extra input {info.name!r} holds NaN/Inf", expected="finite values", actual="non-finite")
    return arr.astype(info.dtype, copy=False)


def check_extras(given: Mapping[str, Any], infos: "list[InputInfo]", *, batch: int, segment_len: int) -> Mapping[str, np.ndarray]:
    """The step's extra inputs, every declared one and no other."""
    if not infos and not given:
        return NO_EXTRAS
    declared = [i.name for i in infos]
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError("unknown step inputs", expected=f"extra inputs {declared}" if declared else "no extra inputs (this package takes tokens, lengths, reset)", actual=unknown)
    missing = [n for n in declared if n not in given]
    if missing:
        raise InputError("missing step inputs", expected=f"every extra input of the package {declared}", actual=f"missing {missing}")
    return {i.name: check_extra(given[i.name], i, batch=batch, segment_len=segment_len) for i in infos}
