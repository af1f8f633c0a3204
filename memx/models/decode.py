"""Token-by-token decoding inside a segment (DESIGN.md §8, issue 19): the pieces every
decodable family shares.

A decodable model has two more graphs beside its step:

    decode_open(reset bool[B], *state_in)             -> *prefix cache   (once per segment)
    decode(tokens int64[B, n], lengths int64[B], position int64[B], *cache)
                                                      -> logits[B, n, V], *token cache

``decode_open`` turns the read memory into what the segment's tokens attend to (per layer
keys/values of RMT's read block, GMAT's read stream, the KV cache's history); ``decode``
appends ``lengths[b]`` new tokens to row b's segment at ``position[b]`` and returns their
logits. Only the step graph writes memory: the runtime steps the full segment when it is
full. The token cache has a fixed capacity (the package's longest segment); slots are
written without in-place writes (a one-hot matmul and ``where``) and slots at or past a
row's position are never attended to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from memx.models.layers import MASKED_LOGIT, MultiHeadAttention


@dataclass(frozen=True)
class CacheSpec:
    """One tensor of a decode cache; ``shape`` excludes the batch axis. ``graph`` is the graph
    that writes it: "decode_open" (what the read memory gives, fixed for the segment) or
    "decode" (the segment's tokens, written slot by slot)."""

    name: str
    shape: tuple[int, ...]
    graph: str
    dtype: str = "float32"


OPEN, DECODE = "decode_open", "decode"


def head_cache(name: str, heads: int, slots: int, d_head: int, graph: str) -> CacheSpec:
    return CacheSpec(name, (heads, slots, d_head), graph)


def new_positions(position: torch.Tensor, n: int | torch.SymInt) -> torch.Tensor:
    """(B, n) slot of each new token: position[b] + i."""
    return position.unsqueeze(1) + torch.arange(n, device=position.device).unsqueeze(0)


def new_valid(lengths: torch.Tensor, n: int | torch.SymInt) -> torch.Tensor:
    """(B, n) bool: new token i of row b is real (i < lengths[b])."""
    return torch.arange(n, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def write_slots(cache: torch.Tensor, new: torch.Tensor, position: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """cache (B, h, G, dh) with the real new entries new (B, h, n, dh) written at slots
    position[b] + i: a one-hot matmul (exact: one term per slot) and ``where``."""
    g, n = cache.shape[2], new.shape[2]
    slots = new_positions(position, n)  # (B, n)
    hit = (slots.unsqueeze(-1) == torch.arange(g, device=cache.device)) & new_valid(lengths, n).unsqueeze(-1)  # (B, n, G)
    scattered = torch.matmul(hit.to(new.dtype).transpose(1, 2).unsqueeze(1), new)  # (B, 1, G, n) @ (B, h, n, dh) -> (B, h, G, dh)
    written = hit.any(dim=1)[:, None, :, None]  # (B, 1, G, 1)
    return torch.where(written, scattered, cache)


def causal_slots(position: torch.Tensor, n: int | torch.SymInt, capacity: int | torch.SymInt) -> torch.Tensor:
    """(B, n, G) bool: new token i of row b may see token slot g (g <= position[b] + i)."""
    slots = torch.arange(capacity, device=position.device)  # (G,)
    return slots.reshape(1, 1, -1) <= new_positions(position, n).unsqueeze(-1)


def attend(attn: MultiHeadAttention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MultiHeadAttention's arithmetic on given keys/values: q (B, h, n, dh), keys/values
    (B, h, L, dh), mask (B, 1, n, L) -> (B, n, d) after the output projection."""
    scores = torch.matmul(q, keys.transpose(-1, -2)) * (1.0 / math.sqrt(attn.d_head))  # (B, h, n, L)
    scores = torch.where(mask, scores, torch.full_like(scores, MASKED_LOGIT))
    out = torch.matmul(torch.softmax(scores, dim=-1), values)  # (B, h, n, dh)
    return attn.out_proj(attn.merge_heads(out))


def embed_at(tok: nn.Embedding, pos: torch.Tensor, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Token embedding plus the learned absolute position of each new token in its segment,
    as SegmentEmbedding adds them for a whole segment: (B, n, d). Positions past the table
    (padding of a full row) read its last entry; their outputs are masked."""
    slots = new_positions(position, tokens.shape[1]).clamp(max=pos.shape[0] - 1)  # (B, n)
    return tok(tokens) + pos[slots]


class DecodeGraph(nn.Module):
    """One decode graph of a model as a module returning a flat tuple (what the exporter and
    the torch backend run)."""

    def __init__(self, model: nn.Module, role: str, capacity: int):
        super().__init__()
        self.model, self.role, self.capacity = model, role, capacity

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.role == OPEN:
            return tuple(self.model.decode_open(*args))
        return tuple(self.model.decode_tokens(*args))
