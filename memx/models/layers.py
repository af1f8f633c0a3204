"""Shared Transformer layers, written to export cleanly with torch.onnx (dynamo).

No data-dependent control flow, no boolean-mask indexing, no in-place writes:
masks are boolean tensors combined with ``where``, attention is explicit
MatMul/Softmax so every runtime sees the same primitive ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

# Large negative logit for masked keys; finite so fully masked rows cannot give NaN,
# and inside the fp16 range so a later fp16 conversion keeps it.
MASKED_LOGIT = -30000.0


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query and key/value inputs."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)  # (B, h, N, dh)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = x.shape
        return x.transpose(1, 2).reshape(b, n, self.n_heads * self.d_head)  # (B, N, d)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.split_heads(self.q_proj(x))  # (B, h, N, dh)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_proj(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)  # (B, h, N, dh) each

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """query (B, Lq, d), context (B, Lk, d), mask bool broadcastable to (B, h, Lq, Lk)."""
        q = self.queries(query)  # (B, h, Lq, dh)
        k, v = self.keys_values(context)  # (B, h, Lk, dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))  # (B, h, Lq, Lk)
        if mask is not None:
            scores = torch.where(mask, scores, torch.full_like(scores, MASKED_LOGIT))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, h, Lq, dh)
        return self.out_proj(self.merge_heads(out))


class FeedForward(nn.Module):
    """Position-wise MLP with GELU (tanh form: one ONNX op sequence everywhere)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN Transformer block: x + Attn(LN(x), LN(context)), then x + FFN(LN(x)).

    With ``context=None`` it is self-attention over ``x``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ln_ffn = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_attn(x)
        kv = q if context is None else self.ln_attn(context)
        x = x + self.attn(q, kv, mask)
        return x + self.ffn(self.ln_ffn(x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style initialisation: N(0, std) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def width_aware_init(module: nn.Module, d_model: int) -> None:
    """Linear weights N(0, d^-1/2), token embeddings N(0, 1) (PyTorch's own scales), zero
    biases, unit LayerNorm. At d=64, GPT-2's N(0, 0.02) starts attention almost flat and Adam
    collapsed the key embeddings onto each other: RMT plateaued at 35% on associative
    retrieval and Memformer at 75% on majority; with this init they reach 99.6% and 97%
    (docs/zoo.md, "Why the RMT zoo model plateaued")."""
    init_weights(module, std=d_model ** -0.5)
    for m in module.modules():
        if isinstance(m, SegmentEmbedding):
            nn.init.normal_(m.tok.weight, std=1.0)


def token_valid(lengths: torch.Tensor, segment_len: int | torch.SymInt, like: torch.Tensor) -> torch.Tensor:
    """Boolean (B, S): position s of row b is a real token (s < lengths[b])."""
    positions = torch.arange(segment_len, device=like.device)  # (S,)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)


@dataclass
class BackboneConfig:
    """Fields every memory-token family shares; family configs subclass it."""

    min_memory: ClassVar[int] = 1  # families that work without memory set 0

    vocab_size: int = 64
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 64
    num_memory: int = 4
    max_segment_len: int = 32

    def __post_init__(self) -> None:
        if self.num_memory < self.min_memory:
            raise ValueError(f"num_memory must be >= {self.min_memory}, got {self.num_memory}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


class SegmentEmbedding(nn.Module):
    """Token embedding plus learned absolute positions within the segment."""

    def __init__(self, c: BackboneConfig):
        super().__init__()
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Parameter(torch.zeros(c.max_segment_len, c.d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok(tokens) + self.pos[: tokens.shape[1]].unsqueeze(0)  # (B, S, d)


def make_blocks(c: BackboneConfig) -> nn.ModuleList:
    return nn.ModuleList(Block(c.d_model, c.n_heads, c.d_ff) for _ in range(c.n_layers))


def init_params(*params: nn.Parameter, std: float = 0.02) -> None:
    for p in params:
        nn.init.normal_(p, std=std)


def last_real(cache: torch.Tensor, new: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The last L real entries of [cache (B, L, ...); new (B, S, ...)], where row b of
    ``new`` has lengths[b] real entries first: a sliding cache without in-place writes."""
    L = cache.shape[1]
    both = torch.cat([cache, new], dim=1)  # (B, L+S, ...)
    index = lengths[:, None] + torch.arange(L, device=lengths.device)[None, :]  # (B, L)
    index = index.reshape(*index.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
    return torch.gather(both, 1, index)


def cache_then_causal_mask(valid: torch.Tensor, cache_valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, L+S) attention mask: every query sees the cache's real entries, then the
    real tokens of the segment up to itself."""
    s = valid.shape[1]
    pos = torch.arange(s, device=valid.device)
    causal = pos[None, :] <= pos[:, None]  # (S, S)
    tok = causal[None] & valid[:, None, :]  # (B, S, S)
    cache = cache_valid[:, None, :].expand(-1, s, -1)  # (B, S, L)
    return torch.cat([cache, tok], dim=2).unsqueeze(1)  # (B, 1, S, L+S)
