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
full. The token cache has a fixed capacity (the package's longest segment) plus one trash
slot: new tokens are written by one ScatterND (``index_put``), padding tokens into the trash
slot, and slots past a real token's own are never attended to.
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


def token_cache(name: str, heads: int, capacity: int, d_head: int) -> CacheSpec:
    """A per-head token cache of ``capacity`` slots and the trash slot padding tokens go to."""
    return CacheSpec(name, (heads, capacity + 1, d_head), DECODE)


def new_positions(position: torch.Tensor, n: int | torch.SymInt) -> torch.Tensor:
    """(B, n) slot of each new token: position[b] + i."""
    return position.unsqueeze(1) + torch.arange(n, device=position.device).unsqueeze(0)


def new_valid(lengths: torch.Tensor, n: int | torch.SymInt) -> torch.Tensor:
    """(B, n) bool: new token i of row b is real (i < lengths[b])."""
    return torch.arange(n, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def write_slots(cache: torch.Tensor, new: torch.Tensor, position: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """cache (B, h, G+1, dh) with the new entries new (B, h, n, dh) written at slots
    position[b] + i (real tokens) or G, the trash slot (padding): one ScatterND."""
    b, h, slots, _ = cache.shape
    n = new.shape[2]
    at = torch.where(new_valid(lengths, n), new_positions(position, n), torch.full_like(position.unsqueeze(1), slots - 1))  # (B, n)
    bi = torch.arange(b, device=cache.device).reshape(-1, 1, 1).expand(-1, h, n)  # (B, h, n)
    hi = torch.arange(h, device=cache.device).reshape(1, -1, 1).expand(b, -1, n)
    return torch.index_put(cache, (bi, hi, at.unsqueeze(1).expand(-1, h, -1)), new)


def causal_slots(position: torch.Tensor, n: int | torch.SymInt, capacity: int | torch.SymInt) -> torch.Tensor:
    """(B, n, G) bool: new token i of row b may see token slot g (g <= position[b] + i)."""
    slots = torch.arange(capacity, device=position.device)  # (G,)
    return slots.reshape(1, 1, -1) <= new_positions(position, n).unsqueeze(-1)


def attend(attn: MultiHeadAttention, q: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None, tokens: tuple[torch.Tensor, torch.Tensor],
           mask: torch.Tensor) -> torch.Tensor:
    """MultiHeadAttention's arithmetic over [prefix; token cache] without concatenating the
    caches: q (B, h, n, dh), prefix and token keys/values (B, h, P | G+1, dh), mask
    (B, 1, n, P + G+1) -> (B, n, d) after the output projection."""
    scale = 1.0 / math.sqrt(attn.d_head)
    parts = ([torch.matmul(q, prefix[0].transpose(-1, -2)) * scale] if prefix is not None else []) + [torch.matmul(q, tokens[0].transpose(-1, -2)) * scale]
    scores = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]  # (B, h, n, P + G+1): small
    weights = torch.softmax(torch.where(mask, scores, torch.full_like(scores, MASKED_LOGIT)), dim=-1)
    if prefix is None:
        out = torch.matmul(weights, tokens[1])  # (B, h, n, dh)
    else:
        p = prefix[0].shape[2]
        out = torch.matmul(weights[..., :p], prefix[1]) + torch.matmul(weights[..., p:], tokens[1])  # (B, h, n, dh)
    return attn.out_proj(attn.merge_heads(out))


def decode_layer(block: nn.Module, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 position: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pre-LN block (``ln_attn``, ``attn``, ``ln_ffn``, ``ffn``: layers.Block and its
    subclasses) over the new tokens x (B, n, d): their keys/values written into the token
    cache, attention to [prefix; token cache] under ``mask``, then the FFN. Returns (x, k, v)."""
    hn = block.ln_attn(x)
    k_new, v_new = block.attn.keys_values(hn)  # (B, h, n, dh)
    k, v = write_slots(k_cache, k_new, position, lengths), write_slots(v_cache, v_new, position, lengths)
    x = x + attend(block.attn, block.attn.queries(hn), prefix, (k, v), mask)
    return x + block.ffn(block.ln_ffn(x)), k, v


def real_logits(head: nn.Module, ln_f: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """head(ln_f(x)) of the new tokens (B, n, V), zero at padding positions (as the step's logits)."""
    return head(ln_f(x)) * new_valid(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)


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
