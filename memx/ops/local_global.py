"""GMAT-style local + global attention in blocked form.

Token i attends to all M global memory slots and to the real tokens j of its sparse
neighbourhood:

- ``chunked``: the same chunk of ``window`` tokens (j // window == i // window);
- ``band``: a sliding window, |i - j| <= window;

and, when ``causal``, only to j <= i. Tokens at j >= lengths[b] are never keys, and the
outputs of padding queries (i >= lengths[b]) are zero, so every real query sees at least
itself and no row is ever fully masked.

The blocked form splits the (padded) segment into blocks of ``window`` tokens and
scores each query block against the memory and its own (chunked) or its own and both
neighbouring (band) key blocks: O(S·(w + M)) memory per head, never an S×S matrix.
Everything is static-shaped arithmetic, so it exports to ONNX with a dynamic S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATTERNS = ("band", "chunked")
MASKED_LOGIT = -30000.0


def _block_keys(x: torch.Tensor, n_blocks: int | torch.SymInt, window: int, pattern: str) -> torch.Tensor:
    """(B, h, Sp, dh) -> key blocks (B, h, n, K, dh): K = window (chunked) or 3·window (band)."""
    b, h, _, dh = x.shape
    if pattern == "chunked":
        return x.reshape(b, h, n_blocks, window, dh)
    padded = F.pad(x, (0, 0, window, window)).reshape(b, h, n_blocks + 2, window, dh)  # one empty block each side
    return torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=3)  # (B, h, n, 3w, dh)


def _local_mask(lengths: torch.Tensor, n_blocks: int | torch.SymInt, window: int, pattern: str, causal: bool) -> torch.Tensor:
    """(B, 1, n, w, K) boolean: may query (block, i) see local key k."""
    block = torch.arange(n_blocks, device=lengths.device).reshape(-1, 1, 1)  # (n, 1, 1)
    qpos = block * window + torch.arange(window, device=lengths.device).reshape(1, -1, 1)  # (n, w, 1)
    if pattern == "chunked":
        kpos = block * window + torch.arange(window, device=lengths.device).reshape(1, 1, -1)  # (n, 1, w)
        near = torch.ones_like(qpos >= kpos)
    else:
        kpos = (block - 1) * window + torch.arange(3 * window, device=lengths.device).reshape(1, 1, -1)  # (n, 1, 3w)
        near = (qpos - kpos).abs() <= window
    if causal:
        near = near & (kpos <= qpos)
    real = (kpos >= 0).unsqueeze(0) & (kpos.unsqueeze(0) < lengths.reshape(-1, 1, 1, 1))  # (B, n, 1, K)
    return (near.unsqueeze(0) & real).unsqueeze(1)  # (B, 1, n, w, K)


def local_global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mem_k: torch.Tensor | None,
    mem_v: torch.Tensor | None,
    lengths: torch.Tensor,
    *,
    pattern: str = "band",
    window: int,
    causal: bool = False,
) -> torch.Tensor:
    """q, k, v (B, h, S, dh); mem_k, mem_v (B, h, M, dh) or None for M = 0; lengths (B,).
    Returns (B, h, S, dh)."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    b, h, s, dh = q.shape
    m = 0 if mem_k is None else mem_k.shape[2]  # static: no memory path at all when M = 0
    n_blocks = (s + window - 1) // window
    pad = n_blocks * window - s
    qb = F.pad(q, (0, 0, 0, pad)).reshape(b, h, n_blocks, window, dh)  # (B, h, n, w, dh)
    kb = _block_keys(F.pad(k, (0, 0, 0, pad)), n_blocks, window, pattern)  # (B, h, n, K, dh)
    vb = _block_keys(F.pad(v, (0, 0, 0, pad)), n_blocks, window, pattern)
    scale = 1.0 / math.sqrt(dh)
    local = torch.matmul(qb, kb.transpose(-1, -2)) * scale  # (B, h, n, w, K)
    local = torch.where(_local_mask(lengths, n_blocks, window, pattern, causal), local, torch.full_like(local, MASKED_LOGIT))
    if m == 0:
        out = torch.matmul(torch.softmax(local, dim=-1), vb)  # (B, h, n, w, dh)
    else:
        glob = torch.matmul(qb, mem_k.unsqueeze(2).transpose(-1, -2)) * scale  # (B, h, n, w, M)
        weights = torch.softmax(torch.cat([glob, local], dim=-1), dim=-1)  # (B, h, n, w, M + K)
        out = torch.matmul(weights[..., m:], vb) + torch.matmul(weights[..., :m], mem_v.unsqueeze(2))  # (B, h, n, w, dh)
    out = out.reshape(b, h, n_blocks * window, dh)[:, :, :s]  # (B, h, S, dh)
    return out * _real_queries(lengths, s, out)


def _real_queries(lengths: torch.Tensor, s: int | torch.SymInt, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, 1) 1.0 for real query positions, 0.0 for padding."""
    real = torch.arange(s, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
    return real.to(like.dtype)[:, None, :, None]


def dense_local_global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mem_k: torch.Tensor | None,
    mem_v: torch.Tensor | None,
    lengths: torch.Tensor,
    *,
    pattern: str = "band",
    window: int,
    causal: bool = False,
) -> torch.Tensor:
    """The same attention with a full S×S mask: the reference the blocked form must equal."""
    if mem_k is None or mem_v is None:  # M = 0
        mem_k = mem_v = q[:, :, :0]
    s, m = q.shape[2], mem_k.shape[2]
    i = torch.arange(s, device=q.device).unsqueeze(1)  # (S, 1)
    j = torch.arange(s, device=q.device).unsqueeze(0)  # (1, S)
    near = (i // window == j // window) if pattern == "chunked" else (i - j).abs() <= window
    if causal:
        near = near & (j <= i)
    mask = near.unsqueeze(0) & (j.unsqueeze(0) < lengths.reshape(-1, 1, 1))  # (B, S, S)
    mask = torch.cat([torch.ones(q.shape[0], s, m, dtype=torch.bool, device=q.device), mask], dim=-1).unsqueeze(1)  # (B, 1, S, M+S)
    keys, values = torch.cat([mem_k, k], dim=2), torch.cat([mem_v, v], dim=2)  # (B, h, M+S, dh)
    scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, h, S, M+S)
    scores = torch.where(mask, scores, torch.full_like(scores, MASKED_LOGIT))
    return torch.matmul(torch.softmax(scores, dim=-1), values) * _real_queries(lengths, s, q)
