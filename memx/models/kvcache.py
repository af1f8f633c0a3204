"""A plain causal Transformer that keeps the full history: the baseline memory models are
measured against (``memx profile --history``).

Its state is a key/value cache of the last ``history`` real tokens per layer (keys and
values with heads merged, ``k{l}``/``v{l}`` of shape (history, d)) and their validity, so
every segment attends to everything kept: the per-segment cost grows with ``history``,
where a memory model's stays constant. It exports with the same step contract (sliding
cache by gather, no in-place writes) and runs through every runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from memx.models.base import OutputSpec, SegmentModel, StateSpec
from memx.models.layers import (
    MASKED_LOGIT, BackboneConfig, SegmentEmbedding, cache_then_causal_mask, init_params, init_weights, last_real, make_blocks, token_valid,
)
from memx.models.decode import OPEN, CacheSpec, causal_slots, decode_layer, embed_at, head_cache, real_logits, token_cache
from memx.models.registry import register_family, register_preset


@dataclass
class KVCacheConfig(BackboneConfig):
    min_memory: ClassVar[int] = 0
    num_memory: int = 0  # no memory tokens: the cache is the memory
    history: int = 64  # tokens kept in the cache

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history}")


@register_family("kvcache")
class KVCacheTransformer(SegmentModel):
    config_class = KVCacheConfig

    def __init__(self, config: KVCacheConfig):
        super().__init__(config)
        c = config
        self.embed = SegmentEmbedding(c)
        self.blocks = make_blocks(c)
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        init_weights(self)
        init_params(self.embed.pos)

    @property
    def is_causal(self) -> bool:
        return True

    def state_specs(self) -> list[StateSpec]:
        c = self.config
        specs = []
        for i in range(c.n_layers):
            specs += [StateSpec(f"k{i}", (c.history, c.d_model)), StateSpec(f"v{i}", (c.history, c.d_model))]
        return specs + [StateSpec("valid", (c.history,))]

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *state: torch.Tensor):
        state = self.zeroed_on_reset(reset, state)  # rows start with an empty cache
        valid_cache = state[-1]  # (B, H)
        s = tokens.shape[1]
        valid = token_valid(lengths, s, tokens)  # (B, S)
        mask = cache_then_causal_mask(valid, valid_cache > 0.5)  # (B, 1, S, H+S)
        h = self.embed(tokens)  # (B, S, d)
        new_state = []
        for i, block in enumerate(self.blocks):
            attn = block.attn
            hn = block.ln_attn(h)
            k_new, v_new = attn.kv_proj(hn).chunk(2, dim=-1)  # (B, S, d) each
            keys = attn.split_heads(torch.cat([state[2 * i], k_new], dim=1))  # (B, h, H+S, dh)
            values = attn.split_heads(torch.cat([state[2 * i + 1], v_new], dim=1))  # (B, h, H+S, dh)
            scores = torch.matmul(attn.queries(hn), keys.transpose(-1, -2)) * (1.0 / math.sqrt(attn.d_head))  # (B, h, S, H+S)
            scores = torch.where(mask, scores, torch.full_like(scores, MASKED_LOGIT))
            h = h + attn.out_proj(attn.merge_heads(torch.matmul(torch.softmax(scores, dim=-1), values)))
            h = h + block.ffn(block.ln_ffn(h))
            real = valid.unsqueeze(-1).to(h.dtype)  # (B, S, 1): padded positions never enter the cache
            new_state += [last_real(state[2 * i], k_new * real, lengths), last_real(state[2 * i + 1], v_new * real, lengths)]
        new_state.append(last_real(valid_cache, valid.to(valid_cache.dtype), lengths))
        logits = self.head(self.ln_f(h)) * valid.unsqueeze(-1).to(h.dtype)  # (B, S, V)
        return (logits, *(self.keep_if_empty(lengths, n, o) for n, o in zip(new_state, state)))


    # --- decoding: the history (reset applied) is the prefix every token reads ---------------
    def decode_support(self) -> str | None:
        return None

    def decode_cache_specs(self, capacity: int) -> list[CacheSpec]:
        c = self.config
        h, dh = c.n_heads, c.d_model // c.n_heads
        specs = []
        for i in range(c.n_layers):
            specs += [head_cache(f"hist_k{i}", h, c.history, dh, OPEN), head_cache(f"hist_v{i}", h, c.history, dh, OPEN)]
        specs.append(CacheSpec("hist_valid", (c.history,), OPEN))
        for i in range(c.n_layers):
            specs += [token_cache(f"k{i}", h, capacity, dh), token_cache(f"v{i}", h, capacity, dh)]
        return specs

    def decode_open(self, reset: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.zeroed_on_reset(reset, state)  # rows start with an empty cache, as in forward
        split = self.blocks[0].attn.split_heads
        return (*(split(t) for t in state[:-1]), state[-1])  # (B, h, H, dh) per key/value, valid (B, H)

    def decode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_layers = self.config.n_layers
        history, hist_valid, tok_cache = cache[: 2 * n_layers], cache[2 * n_layers], cache[2 * n_layers + 1 :]
        n, capacity = tokens.shape[1], tok_cache[0].shape[2]
        sees = causal_slots(position, n, capacity)  # (B, n, G)
        hist = (hist_valid > 0.5).unsqueeze(1).expand(-1, n, -1)  # (B, n, H)
        mask = torch.cat([hist, sees], dim=2).unsqueeze(1)  # (B, 1, n, H+G)
        x = embed_at(self.embed.tok, self.embed.pos, tokens, position)  # (B, n, d)
        written = []
        for i, block in enumerate(self.blocks):
            x, k, v = decode_layer(block, x, (history[2 * i], history[2 * i + 1]), tok_cache[2 * i], tok_cache[2 * i + 1], position, lengths, mask)
            written += [k, v]
        logits = real_logits(self.head, self.ln_f, x, lengths)  # (B, n, V)
        return (logits, *written)


register_preset("kvcache-tiny", "kvcache", size="tiny", description="plain causal Transformer keeping a 64-token KV cache (full-history baseline), d=32")
register_preset(
    "kvcache-small", "kvcache", size="small", description="plain causal Transformer, 4 layers, d=256, KV cache of 1024 tokens (baseline)",
    vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, max_segment_len=128, history=1024,
)
