"""Recurrent Memory Transformer cells around Hugging Face models (``pip install memx-toolkit[hf]``).

    from memx.models import hf
    step = hf.rmt_decoder("path/to/gpt2-like", memory_slots=8, max_segment_len=128)   # any *ForCausalLM
    step = hf.rmt_encoder("path/to/minilm", memory_slots=4, max_segment_len=128)      # any encoder *Model
    memx.export(step, "rmt.memx")

As in the RMT papers: memory tokens are embeddings that join the segment's input embeddings.
The decoder reads memory at the start of the segment and writes it at the end,
``[read memory | tokens | write memory]``, the new memory being the last hidden states at the
write positions; the encoder puts the memory first and takes its hidden states back. Positions
are given explicitly from ``lengths`` (the write tokens follow the last real token whatever
the padding), the cache is off, and the models come from a directory (``from_pretrained``,
no hub access) or an instance. Tied embeddings export as they are.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from memx.errors import ContractError
from memx.models.wrap import State, WrappedModel, wrap


def _load(model: Any, kind: str) -> nn.Module:
    """An instance, or a local directory loaded with transformers' Auto class for ``kind``."""
    if isinstance(model, nn.Module):
        return model.eval()
    if not isinstance(model, (str, os.PathLike)) or not os.path.isdir(model):
        raise ContractError(f"an RMT {kind} cell takes a Hugging Face model or a local model directory", expected="an nn.Module or a directory with config.json",
                            actual=str(model))
    try:
        import transformers
    except ImportError:
        raise ContractError("Hugging Face cells need transformers", expected="pip install memx-toolkit[hf]", actual="transformers is not installed") from None
    auto = transformers.AutoModelForCausalLM if kind == "decoder" else transformers.AutoModel
    return auto.from_pretrained(str(model)).eval()


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    for attr in ("hidden_size", "n_embd", "d_model"):
        if hasattr(config, attr):
            return int(getattr(config, attr))
    raise ContractError("cannot tell the model's hidden size", expected="config.hidden_size, n_embd or d_model", actual=type(config).__name__)


def _positions(n: int, start: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)[None, :].expand(batch, -1) + (start if isinstance(start, int) else start[:, None])  # (B, n)


class RMTDecoderCell(nn.Module):
    """[read memory | tokens | write memory] through a causal LM."""

    def __init__(self, lm: nn.Module, slots: int):
        super().__init__()
        self.lm, self.slots = lm, slots

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        b, s = input_ids.shape
        embeds = torch.cat([memory, self.lm.get_input_embeddings()(input_ids), memory], 1)  # (B, M + S + M, H)
        ones = torch.ones_like(attention_mask[:, :1]).expand(-1, self.slots)
        mask = torch.cat([ones, attention_mask, ones], 1)
        lengths = attention_mask.sum(1)  # (B,)
        positions = torch.cat([_positions(self.slots, 0, b, input_ids.device), _positions(s, self.slots, b, input_ids.device),
                               _positions(self.slots, lengths + self.slots, b, input_ids.device)], 1)  # write slots follow the last real token
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False, output_hidden_states=True)
        return {"logits": out.logits[:, self.slots : self.slots + s], "memory": out.hidden_states[-1][:, self.slots + s :]}


class RMTEncoderCell(nn.Module):
    """[memory | tokens] through an encoder; the new memory is the memory positions' output."""

    def __init__(self, encoder: nn.Module, slots: int):
        super().__init__()
        self.encoder, self.slots = encoder, slots

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        embeds = torch.cat([memory, self.encoder.get_input_embeddings()(input_ids)], 1)  # (B, M + S, H)
        mask = torch.cat([torch.ones_like(attention_mask[:, :1]).expand(-1, self.slots), attention_mask], 1)
        hidden = self.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return {"hidden": hidden[:, self.slots :], "memory": hidden[:, : self.slots]}


def rmt_decoder(model: Any, *, memory_slots: int = 8, max_segment_len: int = 128, name: str | None = None, factory: str | None = None) -> WrappedModel:
    """An RMT step around a causal LM (an instance or a local directory): outputs logits (B, S, V)."""
    lm = _load(model, "decoder")
    return wrap(RMTDecoderCell(lm, memory_slots), state={"memory": State((memory_slots, _hidden_size(lm)), init="learned")},
                vocab_size=lm.config.vocab_size, max_segment_len=max_segment_len, mask="attention_mask", causal=True,
                name=name or f"rmt-{lm.config.model_type}-decoder", config={"model": lm.config.to_dict(), "memory_slots": memory_slots}, factory=factory)


def rmt_encoder(model: Any, *, memory_slots: int = 4, max_segment_len: int = 128, name: str | None = None, factory: str | None = None) -> WrappedModel:
    """An RMT step around an encoder (an instance or a local directory): outputs hidden (B, S, H)."""
    encoder = _load(model, "encoder")
    return wrap(RMTEncoderCell(encoder, memory_slots), state={"memory": State((memory_slots, _hidden_size(encoder)), init="learned")},
                vocab_size=encoder.config.vocab_size, max_segment_len=max_segment_len, mask="attention_mask",
                name=name or f"rmt-{encoder.config.model_type}-encoder", config={"model": encoder.config.to_dict(), "memory_slots": memory_slots}, factory=factory)
