"""Blocked local+global attention equals the dense masked reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from memx.ops import dense_local_global_attention, local_global_attention

CASES = list(itertools.product(["band", "chunked"], [1, 3, 4, 8], [0, 1, 5], [False, True]))


@pytest.mark.parametrize("pattern, window, m, causal", CASES)
def test_blocked_equals_dense(pattern, window, m, causal):
    g = torch.Generator().manual_seed(CASES.index((pattern, window, m, causal)))
    b, h, s, dh = 3, 2, 13, 8  # 13 is a multiple of no window above but 1
    q, k, v = (torch.randn(b, h, s, dh, generator=g) for _ in range(3))
    mk, mv = (torch.randn(b, h, m, dh, generator=g) for _ in range(2))
    lengths = torch.tensor([13, 7, 1])
    got = local_global_attention(q, k, v, mk, mv, lengths, pattern=pattern, window=window, causal=causal)
    want = dense_local_global_attention(q, k, v, mk, mv, lengths, pattern=pattern, window=window, causal=causal)
    for row, n in enumerate(lengths.tolist()):  # real queries must agree; padded ones are unused
        torch.testing.assert_close(got[row, :, :n], want[row, :, :n], atol=1e-5, rtol=1e-5)


def test_window_larger_than_segment():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    mk, mv = (torch.randn(2, 2, 2, 4, generator=g) for _ in range(2))
    lengths = torch.tensor([5, 3])
    for pattern in ("band", "chunked"):
        got = local_global_attention(q, k, v, mk, mv, lengths, pattern=pattern, window=16)
        want = dense_local_global_attention(q, k, v, mk, mv, lengths, pattern=pattern, window=16)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1, :, :3], want[1, :, :3], atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    x = torch.zeros(1, 1, 4, 2)
    with pytest.raises(ValueError, match="pattern"):
        local_global_attention(x, x, x, x[:, :, :0], x[:, :, :0], torch.tensor([4]), pattern="dilated", window=2)
    with pytest.raises(ValueError, match="window"):
        local_global_attention(x, x, x, x[:, :, :0], x[:, :, :0], torch.tensor([4]), window=0)
