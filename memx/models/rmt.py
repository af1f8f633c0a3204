"""Recurrent Memory Transformer (Bulatov et al., NeurIPS 2022), as a segment step.

decoder form: input [read memory (M); tokens (S); write memory (M)], both memory
blocks hold the incoming state; tokens are causal, the read block attends only
within itself, the write block attends to everything real. The next memory is
the final (normalised) hidden state at the write positions.

encoder form: input [memory (M); tokens (S)], bidirectional; the next memory is
the final hidden state at the memory positions.

Padded positions (s >= lengths[b]) are masked as keys, so a padded last segment
gives the same real-token outputs and next state as an unpadded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from memx.models.base import OutputSpec, SegmentModel, StateSpec
from memx.models.decode import OPEN, CacheSpec, causal_slots, decode_layer, embed_at, head_cache, real_logits, token_cache
from memx.models.layers import BackboneConfig, SegmentEmbedding, init_params, make_blocks, token_valid, width_aware_init
from memx.models.registry import register_family, register_preset


@dataclass
class RMTConfig(BackboneConfig):
    form: Literal["decoder", "encoder"] = "decoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.form not in ("decoder", "encoder"):
            raise ValueError(f"form must be 'decoder' or 'encoder', got {self.form!r}")


@register_family("rmt")
class RMT(SegmentModel):
    config_class = RMTConfig

    def __init__(self, config: RMTConfig):
        super().__init__(config)
        c = config
        self.embed = SegmentEmbedding(c)
        self.read_pos = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.write_pos = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.init_memory = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.blocks = make_blocks(c)
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        width_aware_init(self, c.d_model)  # not GPT-2's 0.02: at d=64 RMT could not learn retrieval with it (docs/zoo.md)
        init_params(self.embed.pos, self.read_pos, self.write_pos, self.init_memory)

    @property
    def is_causal(self) -> bool:
        return self.config.form == "decoder"

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("memory", (self.config.num_memory, self.config.d_model))]

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    def _decoder_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) with T = M + S + M: read block, causal tokens, write block sees all real."""
        m = self.config.num_memory
        b, s = valid.shape
        t = torch.arange(2 * m + s, device=valid.device)  # (T,)
        is_read, is_tok, is_write = t < m, (t >= m) & (t < m + s), t >= m + s
        tok_idx = t - m
        ones = torch.ones(b, m, dtype=torch.bool, device=valid.device)
        key_real = torch.cat([ones, valid, ones], dim=1)  # (B, T)
        q = lambda x: x.unsqueeze(1)  # (T, 1): query axis
        k = lambda x: x.unsqueeze(0)  # (1, T): key axis
        allowed = (
            (q(is_read) & k(is_read))
            | (q(is_tok) & (k(is_read) | (k(is_tok) & (k(tok_idx) <= q(tok_idx)))))
            | q(is_write)
        )  # (T, T)
        return (allowed.unsqueeze(0) & key_real.unsqueeze(1)).unsqueeze(1)  # (B, 1, T, T)

    def _encoder_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, T) with T = M + S: every query sees memory and the real tokens."""
        ones = torch.ones(valid.shape[0], self.config.num_memory, dtype=torch.bool, device=valid.device)
        return torch.cat([ones, valid], dim=1).unsqueeze(1).unsqueeze(1)  # (B, 1, 1, T)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, memory: torch.Tensor):
        m = self.config.num_memory
        s = tokens.shape[1]
        memory = self.select_initial(reset, self.init_memory, memory)  # (B, M, d)
        valid = token_valid(lengths, s, tokens)  # (B, S)
        x = self.embed(tokens)  # (B, S, d)
        if self.config.form == "decoder":
            h = torch.cat([memory + self.read_pos, x, memory + self.write_pos], dim=1)  # (B, M+S+M, d)
            mask = self._decoder_mask(valid)
        else:
            h = torch.cat([memory + self.read_pos, x], dim=1)  # (B, M+S, d)
            mask = self._encoder_mask(valid)
        for block in self.blocks:
            h = block(h, mask)
        h = self.ln_f(h)
        logits = self.head(h[:, m : m + s]) * valid.unsqueeze(-1).to(h.dtype)  # (B, S, V)
        new_memory = h[:, m + s :] if self.config.form == "decoder" else h[:, :m]  # (B, M, d)
        return logits, self.keep_if_empty(lengths, new_memory, memory)


    # --- decoding (decoder form): the read block is a function of the memory alone ---------
    def decode_support(self) -> str | None:
        return None if self.config.form == "decoder" else super().decode_support()

    def decode_cache_specs(self, capacity: int) -> list[CacheSpec]:
        c = self.config
        h, dh = c.n_heads, c.d_model // c.n_heads
        specs = []
        for i in range(c.n_layers):
            specs += [head_cache(f"read_k{i}", h, c.num_memory, dh, OPEN), head_cache(f"read_v{i}", h, c.num_memory, dh, OPEN)]
        for i in range(c.n_layers):
            specs += [token_cache(f"k{i}", h, capacity, dh), token_cache(f"v{i}", h, capacity, dh)]
        return specs

    def decode_open(self, reset: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per layer the keys/values of the read block [memory + read_pos], which attends only
        within itself: what every token of the segment reads."""
        h = self.select_initial(reset, self.init_memory, memory) + self.read_pos  # (B, M, d)
        cache = []
        for block in self.blocks:
            q = block.ln_attn(h)
            k, v = block.attn.keys_values(q)  # (B, h, M, dh)
            h = h + block.attn(q, q, None)
            h = h + block.ffn(block.ln_ffn(h))
            cache += [k, v]
        return tuple(cache)

    def decode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_layers = self.config.n_layers
        prefix, tok_cache = cache[: 2 * n_layers], cache[2 * n_layers :]
        n, capacity = tokens.shape[1], tok_cache[0].shape[2]
        m = prefix[0].shape[2]
        sees = causal_slots(position, n, capacity)  # (B, n, G)
        mask = torch.cat([torch.ones_like(sees[:, :, :1]).expand(-1, -1, m), sees], dim=2).unsqueeze(1)  # (B, 1, n, M+G)
        x = embed_at(self.embed.tok, self.embed.pos, tokens, position)  # (B, n, d)
        written = []
        for i, block in enumerate(self.blocks):
            x, k, v = decode_layer(block, x, (prefix[2 * i], prefix[2 * i + 1]), tok_cache[2 * i], tok_cache[2 * i + 1], position, lengths, mask)
            written += [k, v]
        logits = real_logits(self.head, self.ln_f, x, lengths)  # (B, n, V)
        return (logits, *written)


register_preset("rmt-tiny", "rmt", size="tiny", description="RMT decoder, 2 layers, d=32, 4 memory tokens")
register_preset(
    "rmt-small", "rmt", size="small", description="RMT decoder, 4 layers, d=256, 16 memory tokens, S<=128",
    vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=16, max_segment_len=128,
)
register_preset("rmt-enc-tiny", "rmt", size="tiny", description="RMT encoder form ([mem; tokens]), d=32", form="encoder")
register_preset(
    "rmt-enc-small", "rmt", size="small", description="RMT encoder form, 4 layers, d=256, 16 memory tokens",
    vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=16, max_segment_len=128, form="encoder",
)
