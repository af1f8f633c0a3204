"""GMAT: Global Memory Augmentation for Transformers (Gupta & Berant, 2020), as a segment step.

Per layer (pre-LN, one set of attention/FFN weights shared by both streams):

1. dense memory update: mem <- mem + Attn(mem, [mem; tokens])  (cost M·(M+S))
2. sparse token update: tokens <- tokens + LocalGlobalAttn(tokens; neighbourhood + updated mem)
3. FFN on both streams.

With ``causal`` tokens read a second memory stream that is updated from memory alone, so
no token sees later tokens of its segment through memory; the write stream (step 1)
becomes the next state, as RMT's read/write memory blocks do.

The sparse part is :func:`memx.ops.sparse_attention`: the blocked reference (O(S·(w+M)))
in PyTorch, the custom op ``memx.LocalGlobalAttention`` in exported graphs.
Options: ``pattern`` band/chunked with ``window``; ``causal``; ``num_memory`` may be 0
(pure sparse baseline); ``recurrent`` carries the final memory to the next segment
(RMT-style extension; the paper's GMAT re-initialises memory per input);
``compression`` reads the outputs from the memory slots only (logits (B, M, V)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from memx.models.base import OutputSpec, SegmentModel, StateSpec
from memx.models.layers import BackboneConfig, Block, SegmentEmbedding, init_params, init_weights, token_valid
from memx.models.decode import OPEN, CacheSpec, causal_slots, decode_layer, embed_at, head_cache, new_positions, real_logits, token_cache
from memx.models.registry import register_family, register_preset
from memx.ops import PATTERNS, dense_local_global_attention, sparse_attention


@dataclass
class GMATConfig(BackboneConfig):
    min_memory: ClassVar[int] = 0

    pattern: Literal["band", "chunked"] = "band"
    window: int = 4
    causal: bool = False
    recurrent: bool = True
    compression: bool = False
    # "dense" runs the same attention with a full S×S mask: the reference/baseline of benchmarks
    attention: Literal["blocked", "dense"] = "blocked"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention not in ("blocked", "dense"):
            raise ValueError(f"attention must be 'blocked' or 'dense', got {self.attention!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if (self.recurrent or self.compression) and self.num_memory == 0:
            raise ValueError("recurrent and compression modes need num_memory >= 1")


class GMATLayer(Block):
    """A pre-LN block whose attention is dense for memory and local+global for tokens."""

    def __init__(self, c: GMATConfig):
        super().__init__(c.d_model, c.n_heads, c.d_ff)
        self.c = c

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor | None, read: torch.Tensor | None, lengths: torch.Tensor, mem_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, S, d); mem (B, M, d) or None when M = 0; mem_mask (B, 1, 1, M+S).

        ``read`` is the causal form's second memory stream: tokens read it, and it never sees
        the current segment's tokens (no look-ahead through memory); ``mem`` is then the write
        stream that becomes the next state. Without ``causal`` both are one stream."""
        xn = self.ln_attn(x)
        mem_k = mem_v = None
        if mem is not None:
            mn = self.ln_attn(mem)
            mem = mem + self.attn(mn, torch.cat([mn, xn], dim=1), mem_mask)  # dense memory update from all real tokens
            if read is not None:
                rn = self.ln_attn(read)
                read = read + self.attn(rn, rn, None)  # memory-only update: nothing from this segment
            mem_k, mem_v = self.attn.keys_values(self.ln_attn(mem if read is None else read))  # (B, h, M, dh)
        k, v = self.attn.keys_values(xn)  # (B, h, S, dh)
        attend = sparse_attention if self.c.attention == "blocked" else dense_local_global_attention
        local = attend(
            self.attn.queries(xn), k, v, mem_k, mem_v, lengths, pattern=self.c.pattern, window=self.c.window, causal=self.c.causal
        )  # (B, h, S, dh)
        x = x + self.attn.out_proj(self.attn.merge_heads(local))
        return x + self.ffn(self.ln_ffn(x)), self._ffn(mem), self._ffn(read)

    def _ffn(self, t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t + self.ffn(self.ln_ffn(t))


@register_family("gmat")
class GMAT(SegmentModel):
    config_class = GMATConfig

    def __init__(self, config: GMATConfig):
        super().__init__(config)
        c = config
        self.embed = SegmentEmbedding(c)
        self.mem_pos = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.init_memory = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.layers = nn.ModuleList(GMATLayer(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        init_weights(self)
        init_params(self.embed.pos, self.mem_pos, self.init_memory)

    @property
    def is_causal(self) -> bool:
        return self.config.causal and not self.config.compression

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("memory", (self.config.num_memory, self.config.d_model))] if self.config.recurrent else []

    def output_specs(self) -> list[OutputSpec]:
        c = self.config
        if c.compression:
            return [OutputSpec("logits", ("batch", c.num_memory, c.vocab_size), segment_axis=None)]
        return [OutputSpec("logits", ("batch", "segment", c.vocab_size))]

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *state: torch.Tensor):
        c = self.config
        b, s = tokens.shape
        valid = token_valid(lengths, s, tokens)  # (B, S)
        x, mem, mem_mask, memory = self.embed(tokens), None, None, None
        if c.num_memory:  # static: a memory-less GMAT has no memory path in its graph
            initial = self.init_memory.unsqueeze(0).expand(b, -1, -1)  # (B, M, d)
            memory = self.select_initial(reset, self.init_memory, state[0]) if c.recurrent else initial
            ones = torch.ones(b, c.num_memory, dtype=torch.bool, device=tokens.device)
            mem_mask = torch.cat([ones, valid], dim=1).unsqueeze(1).unsqueeze(1)  # (B, 1, 1, M+S)
            mem = memory + self.mem_pos
        read = mem if c.causal else None
        for layer in self.layers:
            x, mem, read = layer(x, mem, read, lengths, mem_mask)
        if c.compression:
            logits = self.head(self.ln_f(mem))  # (B, M, V)
        else:
            logits = self.head(self.ln_f(x)) * valid.unsqueeze(-1).to(x.dtype)  # (B, S, V)
        if not c.recurrent:
            return (logits,)
        return logits, self.keep_if_empty(lengths, self.ln_f(mem), memory)


    # --- decoding (causal form): tokens read the read stream, a function of the memory alone ---
    def decode_support(self) -> str | None:
        if self.is_causal and self.config.num_memory:
            return None
        if self.is_causal:
            return "a causal GMAT without memory slots has no read memory to open a segment with (not supported yet)"
        if self.config.compression:
            return "a compressing GMAT's outputs are read from the memory slots after the whole segment"
        return super().decode_support()

    def decode_cache_specs(self, capacity: int) -> list[CacheSpec]:
        c = self.config
        h, dh = c.n_heads, c.d_model // c.n_heads
        specs = []
        if c.num_memory:
            for i in range(c.n_layers):
                specs += [head_cache(f"read_k{i}", h, c.num_memory, dh, OPEN), head_cache(f"read_v{i}", h, c.num_memory, dh, OPEN)]
        for i in range(c.n_layers):
            specs += [token_cache(f"k{i}", h, capacity, dh), token_cache(f"v{i}", h, capacity, dh)]
        return specs

    def decode_open(self, reset: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per layer the keys/values of the read stream, updated from memory alone (GMATLayer)."""
        c = self.config
        if not c.num_memory:
            return ()
        b = reset.shape[0]
        initial = self.init_memory.unsqueeze(0).expand(b, -1, -1)  # (B, M, d)
        read = (self.select_initial(reset, self.init_memory, state[0]) if c.recurrent else initial) + self.mem_pos
        cache = []
        for layer in self.layers:
            rn = layer.ln_attn(read)
            read = read + layer.attn(rn, rn, None)
            cache += list(layer.attn.keys_values(layer.ln_attn(read)))  # (B, h, M, dh) each
            read = layer._ffn(read)
        return tuple(cache)

    def _local_slots(self, position: torch.Tensor, n: int | torch.SymInt, capacity: int | torch.SymInt) -> torch.Tensor:
        """(B, n, G+1) bool: the causal band or chunk of each new token among the slots."""
        c = self.config
        seen = causal_slots(position, n, capacity)  # (B, n, G): g <= p
        p = new_positions(position, n).unsqueeze(-1)  # (B, n, 1)
        g = torch.arange(capacity, device=position.device).reshape(1, 1, -1)  # (1, 1, G)
        near = (g // c.window == p // c.window) if c.pattern == "chunked" else (p - g <= c.window)
        return seen & near

    def decode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        n_prefix = 2 * c.n_layers if c.num_memory else 0
        prefix, tok_cache = cache[:n_prefix], cache[n_prefix:]
        n, capacity = tokens.shape[1], tok_cache[0].shape[2]
        local = self._local_slots(position, n, capacity)  # (B, n, G)
        if n_prefix:
            local = torch.cat([torch.ones_like(local[:, :, :1]).expand(-1, -1, c.num_memory), local], dim=2)  # (B, n, M+G)
        mask = local.unsqueeze(1)  # (B, 1, n, M+G)
        x = embed_at(self.embed.tok, self.embed.pos, tokens, position)  # (B, n, d)
        written = []
        for i, layer in enumerate(self.layers):
            prefix_kv = (prefix[2 * i], prefix[2 * i + 1]) if n_prefix else None
            x, k, v = decode_layer(layer, x, prefix_kv, tok_cache[2 * i], tok_cache[2 * i + 1], position, lengths, mask)
            written += [k, v]
        logits = real_logits(self.head, self.ln_f, x, lengths)  # (B, n, V)
        return (logits, *written)


_SMALL = dict(vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=16, max_segment_len=128)
register_preset("gmat-tiny", "gmat", size="tiny", description="GMAT band window 4 + 4 global slots, recurrent memory, d=32")
register_preset("gmat-small", "gmat", size="small", description="GMAT band window 16 + 16 global slots, recurrent, 4 layers, d=256", window=16, **_SMALL)
register_preset("gmat-chunked-tiny", "gmat", size="tiny", description="GMAT chunked (chunk 8) + 4 slots, memory re-learned per segment (paper form)", pattern="chunked", window=8, recurrent=False)
register_preset("gmat-nomem-tiny", "gmat", size="tiny", description="sparse chunked attention without memory (the baseline memory must fix)", pattern="chunked", window=8, num_memory=0, recurrent=False)
register_preset("gmat-causal-tiny", "gmat", size="tiny", description="GMAT causal band window 4 + 4 slots, recurrent", causal=True)
register_preset("gmat-compress-tiny", "gmat", size="tiny", description="GMAT sequence compression: outputs read from 4 memory slots", compression=True)
