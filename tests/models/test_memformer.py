"""Memformer pieces: slot attention writes each slot from itself and the tokens only, BMN
normalises, the two graphs compose to the step."""

from __future__ import annotations

import torch

from memx.models import build_preset
from memx.models.memformer import biased_memory_normalization


def _inputs(model, b=2, s=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.vocab_size, (b, s), generator=g)
    memory = torch.randn(b, model.config.num_memory, model.config.d_model, generator=g)
    return tokens, torch.tensor([s, s - 2]), memory


def test_each_slot_is_written_from_itself_and_the_tokens_only():
    model = build_preset("memformer-tiny")
    tokens, lengths, memory = _inputs(model)
    valid = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    hidden = torch.randn(2, tokens.shape[1], model.config.d_model)
    with torch.no_grad():
        base = model.writer(memory, hidden, valid)
        other = memory.clone()
        other[:, 1:] += torch.randn_like(other[:, 1:])  # change every slot but slot 0
        changed = model.writer(other, hidden, valid)
        hidden2 = hidden.clone()
        hidden2[1, -1] += 5.0  # a padded token of row 1 changes nothing
        padded = model.writer(memory, hidden2, valid)
    torch.testing.assert_close(changed[:, 0], base[:, 0])
    assert not torch.allclose(changed[:, 1], base[:, 1])
    torch.testing.assert_close(padded, base)


def test_biased_memory_normalization_gives_unit_slots_and_the_learned_initial_memory():
    model = build_preset("memformer-tiny")
    m = biased_memory_normalization(torch.randn(3, 4, 32) * 7, model.memory_bias)
    torch.testing.assert_close(m.norm(dim=-1), torch.ones(3, 4), atol=1e-5, rtol=0)
    init = model.initial_memory()
    torch.testing.assert_close(init, model.memory_bias / model.memory_bias.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
    tokens, lengths, memory = _inputs(model)
    with torch.no_grad():
        _, fresh = model(tokens, lengths, torch.tensor([True, True]), memory)
        _, fresh_zero = model(tokens, lengths, torch.tensor([True, True]), torch.zeros_like(memory))
    torch.testing.assert_close(fresh, fresh_zero)  # reset rows start from BMN(v_bias), whatever came in


def test_encoder_and_decoder_graphs_compose_to_the_step():
    model = build_preset("memformer-tiny")
    tokens, lengths, memory = _inputs(model)
    reset = torch.tensor([False, True])
    specs = {g.name: g for g in model.graph_specs()}
    assert list(specs) == ["encoder", "decoder"]
    with torch.no_grad():
        logits, new_memory = model(tokens, lengths, reset, memory)
        hidden, mem2 = model.graph_module("encoder")(tokens, lengths, reset, memory)
        (logits2,) = model.graph_module("decoder")(tokens, lengths, hidden)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(mem2, new_memory)


def test_decoder_is_causal_over_its_own_tokens():
    model = build_preset("memformer-tiny")
    tokens, lengths, memory = _inputs(model)
    hidden = torch.randn(2, tokens.shape[1], model.config.d_model)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % model.vocab_size
    with torch.no_grad():
        a = model.decode(tokens, torch.tensor([6, 6]), hidden)
        b = model.decode(changed, torch.tensor([6, 6]), hidden)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
