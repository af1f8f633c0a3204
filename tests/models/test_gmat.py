"""GMAT behaviour: sparse attention limits what tokens see; global memory carries the rest."""

from __future__ import annotations

import pytest
import torch

from memx.models import build_preset


def _logits(model, tokens, lengths=None):
    b, s = tokens.shape
    lengths = torch.full((b,), s) if lengths is None else lengths
    states = tuple(torch.zeros(b, *spec.shape) for spec in model.state_specs())
    with torch.no_grad():
        return model(tokens, lengths, torch.ones(b, dtype=torch.bool), *states)[0]


def _change(tokens, pos):
    t = tokens.clone()
    t[0, pos] = (t[0, pos] + 1) % 64
    return t


def test_without_memory_information_does_not_cross_chunks():
    model = build_preset("gmat-nomem-tiny")  # chunks of 8, no memory
    tokens = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(0))
    a, b = _logits(model, tokens), _logits(model, _change(tokens, 3))
    torch.testing.assert_close(a[0, 8:], b[0, 8:], atol=0, rtol=0)  # other chunks untouched
    assert not torch.allclose(a[0, :8], b[0, :8])


def test_global_memory_carries_information_across_chunks():
    model = build_preset("gmat-chunked-tiny")  # chunks of 8 + 4 memory slots
    tokens = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(1))
    a, b = _logits(model, tokens), _logits(model, _change(tokens, 3))
    assert not torch.allclose(a[0, 16:], b[0, 16:]), "a far chunk must see the change through memory"


def test_causal_gmat_does_not_look_ahead_even_through_memory():
    model = build_preset("gmat-causal-tiny")  # band window 4, 4 memory slots, recurrent
    tokens = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(2))
    states = (torch.zeros(1, 4, 32),)
    with torch.no_grad():
        a, mem_a = model(tokens, torch.tensor([12]), torch.tensor([True]), *states)
        b, mem_b = model(_change(tokens, 9), torch.tensor([12]), torch.tensor([True]), *states)
    torch.testing.assert_close(a[0, :9], b[0, :9], atol=0, rtol=0)
    assert not torch.allclose(a[0, 9:], b[0, 9:])
    assert not torch.allclose(mem_a, mem_b), "the next memory must still be written from every token"


def test_compression_outputs_are_read_from_memory():
    model = build_preset("gmat-compress-tiny")
    out = _logits(model, torch.randint(0, 64, (2, 10)))
    assert out.shape == (2, model.config.num_memory, model.vocab_size)


@pytest.mark.parametrize("bad", [dict(pattern="dilated"), dict(window=0), dict(num_memory=0, recurrent=True)])
def test_invalid_configs(bad):
    with pytest.raises(ValueError):
        build_preset("gmat-tiny", **bad)


@pytest.mark.parametrize("name", ["gmat-tiny", "gmat-chunked-tiny", "gmat-nomem-tiny", "gmat-causal-tiny"])
def test_blocked_model_equals_dense_masked_model(name):
    blocked, dense = build_preset(name), build_preset(name, attention="dense")
    dense.load_state_dict(blocked.state_dict())
    tokens = torch.randint(0, 64, (3, 21), generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([21, 13, 2])
    states = tuple(torch.randn(3, *s.shape) for s in blocked.state_specs())
    reset = torch.tensor([False, True, False])
    with torch.no_grad():
        a, b = blocked(tokens, lengths, reset, *states), dense(tokens, lengths, reset, *states)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5)
