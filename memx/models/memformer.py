"""Memformer (Wu et al., arXiv 2010.06891, v3), as a two-graph segment step.

encoder graph: (tokens, lengths, reset, state_in.memory) -> (encoder_hidden, state_out.memory)
    per layer: H += SelfAttn(H) (real tokens only); H += CrossAttn(H, memory) (the memory
    reader); H += FFN(H). After the last layer the slot-attention writer updates each slot
    from itself and the encoder outputs only (never from other slots), with temperature
    tau < 1, and Biased Memory Normalization forgets: m <- (m + v_bias) / ||m + v_bias||.
    The learned initial slots are BMN(v_bias) = v_bias / ||v_bias||.
decoder graph: (tokens, lengths, encoder_hidden) -> logits
    causal self-attention over the segment and cross-attention to the encoder output.

The writer needs no gather: each slot's self-score is a row-wise dot product (B, h, K, 1)
concatenated with its scores against the tokens (B, h, K, S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from memx.models.base import GraphSpec, OutputSpec, SegmentModel, StateSpec
from memx.models.layers import MASKED_LOGIT, BackboneConfig, FeedForward, MultiHeadAttention, SegmentEmbedding, init_params, token_valid, width_aware_init
from memx.models.registry import register_family, register_preset

BMN_EPS = 1e-6


@dataclass
class MemformerConfig(BackboneConfig):
    n_decoder_layers: int = 2
    temperature: float = 0.5  # slot-attention softmax temperature (tau < 1 sharpens)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.n_decoder_layers < 1:
            raise ValueError(f"n_decoder_layers must be >= 1, got {self.n_decoder_layers}")


class CrossBlock(nn.Module):
    """Pre-LN: x += SelfAttn(x); x += CrossAttn(x, context); x += FFN(x)."""

    def __init__(self, c: MemformerConfig):
        super().__init__()
        self.ln_self = nn.LayerNorm(c.d_model)
        self.self_attn = MultiHeadAttention(c.d_model, c.n_heads)
        self.ln_cross = nn.LayerNorm(c.d_model)
        self.ln_context = nn.LayerNorm(c.d_model)
        self.cross_attn = MultiHeadAttention(c.d_model, c.n_heads)
        self.ln_ffn = nn.LayerNorm(c.d_model)
        self.ffn = FeedForward(c.d_model, c.d_ff)

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln_self(x)
        x = x + self.self_attn(h, h, self_mask)
        x = x + self.cross_attn(self.ln_cross(x), self.ln_context(context), context_mask)
        return x + self.ffn(self.ln_ffn(x))


class SlotWriter(nn.Module):
    """Memory slot attention: slot i attends to [itself; encoder outputs], softmax / tau."""

    def __init__(self, c: MemformerConfig):
        super().__init__()
        self.attn = MultiHeadAttention(c.d_model, c.n_heads)
        self.ln_mem = nn.LayerNorm(c.d_model)
        self.ln_tok = nn.LayerNorm(c.d_model)
        self.temperature = c.temperature

    def forward(self, memory: torch.Tensor, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """memory (B, K, d), hidden (B, S, d), valid (B, S) -> written slots (B, K, d)."""
        a = self.attn
        mn, hn = self.ln_mem(memory), self.ln_tok(hidden)
        q = a.queries(mn)  # (B, h, K, dh)
        k_mem, v_mem = a.keys_values(mn)  # (B, h, K, dh) each
        k_tok, v_tok = a.keys_values(hn)  # (B, h, S, dh) each
        scale = 1.0 / (math.sqrt(a.d_head) * self.temperature)
        self_score = (q * k_mem).sum(-1, keepdim=True) * scale  # (B, h, K, 1): slot i with itself only
        tok_score = torch.matmul(q, k_tok.transpose(-1, -2)) * scale  # (B, h, K, S)
        tok_score = torch.where(valid[:, None, None, :], tok_score, torch.full_like(tok_score, MASKED_LOGIT))
        p = torch.softmax(torch.cat([self_score, tok_score], dim=-1), dim=-1)  # (B, h, K, 1+S)
        out = p[..., :1] * v_mem + torch.matmul(p[..., 1:], v_tok)  # (B, h, K, dh)
        return a.out_proj(a.merge_heads(out))  # (B, K, d)


def biased_memory_normalization(memory: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """m <- (m + v_bias) / ||m + v_bias|| per slot (the forgetting mechanism of Memformer v3)."""
    m = memory + bias
    return m / torch.sqrt((m * m).sum(-1, keepdim=True) + BMN_EPS)


@register_family("memformer")
class Memformer(SegmentModel):
    config_class = MemformerConfig

    def __init__(self, config: MemformerConfig):
        super().__init__(config)
        c = config
        self.enc_embed = SegmentEmbedding(c)
        self.encoder = nn.ModuleList(CrossBlock(c) for _ in range(c.n_layers))
        self.ln_enc = nn.LayerNorm(c.d_model)
        self.writer = SlotWriter(c)
        self.memory_bias = nn.Parameter(torch.zeros(c.num_memory, c.d_model))  # v_bias, one per slot
        self.dec_embed = SegmentEmbedding(c)
        self.decoder = nn.ModuleList(CrossBlock(c) for _ in range(c.n_decoder_layers))
        self.ln_dec = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        width_aware_init(self, c.d_model)  # not GPT-2's 0.02: majority stalled at 75% with it (docs/zoo.md)
        init_params(self.enc_embed.pos, self.dec_embed.pos)
        init_params(self.memory_bias, std=1.0)

    # --- contract --------------------------------------------------------------------------
    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("memory", (self.config.num_memory, self.config.d_model))]

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    def intermediate_specs(self) -> list[OutputSpec]:
        return [OutputSpec("encoder_hidden", ("batch", "segment", self.config.d_model))]

    def graph_specs(self) -> list[GraphSpec]:
        return [
            GraphSpec("encoder", "encoder", ("tokens", "lengths", "reset", "state_in.memory"), ("encoder_hidden", "state_out.memory")),
            GraphSpec("decoder", "decoder", ("tokens", "lengths", "encoder_hidden"), ("logits",)),
        ]

    def graph_module(self, name: str) -> nn.Module:
        if name == "encoder":
            return _Graph(self.encode)
        if name == "decoder":
            return _Graph(self.decode)
        raise KeyError(name)

    # --- the two graphs ----------------------------------------------------------------------
    def initial_memory(self) -> torch.Tensor:
        return biased_memory_normalization(torch.zeros_like(self.memory_bias), self.memory_bias)  # (K, d)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.select_initial(reset, self.initial_memory(), memory)  # (B, K, d)
        valid = token_valid(lengths, tokens.shape[1], tokens)  # (B, S)
        key_mask = valid[:, None, None, :]  # (B, 1, 1, S)
        h = self.enc_embed(tokens)  # (B, S, d)
        for block in self.encoder:
            h = block(h, key_mask, memory, None)  # reads memory at every layer
        h = self.ln_enc(h) * valid.unsqueeze(-1).to(h.dtype)  # (B, S, d), padding zeroed
        new_memory = biased_memory_normalization(self.writer(memory, h, valid), self.memory_bias)
        return h, self.keep_if_empty(lengths, new_memory, memory)

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor, encoder_hidden: torch.Tensor) -> torch.Tensor:
        s = tokens.shape[1]
        valid = token_valid(lengths, s, tokens)  # (B, S)
        pos = torch.arange(s, device=tokens.device)
        causal = (pos[None, :] <= pos[:, None])[None, None]  # (1, 1, S, S)
        key_mask = valid[:, None, None, :]  # (B, 1, 1, S)
        h = self.dec_embed(tokens)
        for block in self.decoder:
            h = block(h, causal & key_mask, encoder_hidden, key_mask)
        return self.head(self.ln_dec(h)) * valid.unsqueeze(-1).to(h.dtype)  # (B, S, V)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, memory: torch.Tensor):
        hidden, new_memory = self.encode(tokens, lengths, reset, memory)
        return self.decode(tokens, lengths, hidden), new_memory


class _Graph(nn.Module):
    """One graph of a multi-graph model as a module returning a flat tuple."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.owner = fn.__self__  # registers the model's parameters with this module

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.fn(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


register_preset("memformer-tiny", "memformer", size="tiny", description="Memformer encoder (memory reader, slot writer, BMN) + causal decoder, d=32, 4 slots")
register_preset(
    "memformer-small", "memformer", size="small", description="Memformer, 4 encoder + 4 decoder layers, d=256, 16 slots, S<=128",
    vocab_size=1024, d_model=256, n_heads=4, n_layers=4, n_decoder_layers=4, d_ff=1024, num_memory=16, max_segment_len=128,
)
