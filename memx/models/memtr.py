"""Memory Transformer (Burtsev et al., 2020), three variants, as a segment step.

- ``memtransformer``: M memory tokens prepended, [mem; tokens] through a
  standard (bidirectional) layer stack.
- ``memctrl``: memory positions are updated by a dedicated block per layer
  (own attention and FFN weights) attending over [mem; tokens]; tokens use the
  ordinary block over the same context.
- ``membottleneck``: per layer, mem <- Attn(mem, [mem; tokens]), then
  tokens <- Attn(tokens, updated mem) only: all global information passes
  through memory.

``recurrent=True`` carries the final memory to the next segment (state
``memory``); ``recurrent=False`` starts every segment from the learned memory
and the step has no state at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from memx.models.base import OutputSpec, SegmentModel, StateSpec
from memx.models.layers import BackboneConfig, SegmentEmbedding, init_params, make_blocks, token_valid, width_aware_init
from memx.models.registry import register_family, register_preset

Variant = Literal["memtransformer", "memctrl", "membottleneck"]


@dataclass
class MemTrConfig(BackboneConfig):
    variant: Variant = "memtransformer"
    recurrent: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("memtransformer", "memctrl", "membottleneck"):
            raise ValueError(f"variant must be memtransformer, memctrl or membottleneck, got {self.variant!r}")


@register_family("memtr")
class MemoryTransformer(SegmentModel):
    config_class = MemTrConfig

    def __init__(self, config: MemTrConfig):
        super().__init__(config)
        c = config
        self.embed = SegmentEmbedding(c)
        self.mem_pos = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.init_memory = nn.Parameter(torch.zeros(c.num_memory, c.d_model))
        self.blocks = make_blocks(c)
        if c.variant != "memtransformer":  # dedicated memory blocks
            self.mem_blocks = make_blocks(c)
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        width_aware_init(self, c.d_model)  # not GPT-2's 0.02: copy across 4 segments stalled at 1% of items with it (docs/zoo.md)
        init_params(self.embed.pos, self.mem_pos, self.init_memory)

    def state_specs(self) -> list[StateSpec]:
        if not self.config.recurrent:
            return []
        return [StateSpec("memory", (self.config.num_memory, self.config.d_model))]

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    def _layers(self, mem: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the layer stack; mem (B, M, d), x (B, S, d), key_mask (B, 1, 1, M+S)."""
        m = self.config.num_memory
        variant = self.config.variant
        for i, block in enumerate(self.blocks):
            if variant == "memtransformer":
                h = block(torch.cat([mem, x], dim=1), key_mask)  # (B, M+S, d)
                mem, x = h[:, :m], h[:, m:]
            elif variant == "memctrl":
                ctx = torch.cat([mem, x], dim=1)  # (B, M+S, d)
                mem, x = self.mem_blocks[i](mem, key_mask, ctx), block(x, key_mask, ctx)
            else:  # membottleneck
                mem = self.mem_blocks[i](mem, key_mask, torch.cat([mem, x], dim=1))
                x = block(x, None, mem)  # tokens see memory only
        return mem, x

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *state: torch.Tensor):
        b, s = tokens.shape
        init = self.init_memory.unsqueeze(0).expand(b, -1, -1)  # (B, M, d)
        memory = self.select_initial(reset, self.init_memory, state[0]) if self.config.recurrent else init
        valid = token_valid(lengths, s, tokens)  # (B, S)
        ones = torch.ones(b, self.config.num_memory, dtype=torch.bool, device=tokens.device)
        key_mask = torch.cat([ones, valid], dim=1).unsqueeze(1).unsqueeze(1)  # (B, 1, 1, M+S)
        x = self.embed(tokens)  # (B, S, d)
        mem, x = self._layers(memory + self.mem_pos, x, key_mask)
        logits = self.head(self.ln_f(x)) * valid.unsqueeze(-1).to(x.dtype)  # (B, S, V)
        if not self.config.recurrent:
            return (logits,)
        return logits, self.keep_if_empty(lengths, self.ln_f(mem), memory)


_SMALL = dict(vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=16, max_segment_len=128)
register_preset("memtr-tiny", "memtr", size="tiny", description="MemTransformer, recurrent memory, d=32")
register_preset("memtr-small", "memtr", size="small", description="MemTransformer, recurrent, 4 layers, d=256", **_SMALL)
register_preset("memctrl-tiny", "memtr", size="tiny", description="MemCtrl (dedicated memory layers), recurrent, d=32", variant="memctrl")
register_preset("memctrl-small", "memtr", size="small", description="MemCtrl, recurrent, 4 layers, d=256", variant="memctrl", **_SMALL)
register_preset("membottleneck-tiny", "memtr", size="tiny", description="MemBottleneck (tokens see memory only), recurrent, d=32", variant="membottleneck")
register_preset("membottleneck-small", "memtr", size="small", description="MemBottleneck, recurrent, 4 layers, d=256", variant="membottleneck", **_SMALL)
register_preset("memtr-static-tiny", "memtr", size="tiny", description="MemTransformer, learned memory every segment (no state), d=32", recurrent=False)
register_preset("memtr-static-small", "memtr", size="small", description="MemTransformer, learned memory every segment (no state), d=256", recurrent=False, **_SMALL)
