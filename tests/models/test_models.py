"""Every registered preset honours the step contract in PyTorch (no export involved)."""

from __future__ import annotations

import pytest
import torch

from memx.errors import MemxError, RegistryError
from memx.models import build_preset, families, get_preset, presets

TINY = [p.name for p in presets("tiny")]
ALL = [p.name for p in presets()]


def _inputs(model, b: int, s: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.vocab_size, (b, s), generator=g)
    states = tuple(torch.randn(b, *spec.shape, generator=g) for spec in model.state_specs())
    return tokens, states


def _step(model, tokens, lengths, reset, states):
    with torch.no_grad():
        out = model(tokens, torch.as_tensor(lengths), torch.as_tensor(reset), *states)
    out = out if isinstance(out, tuple) else (out,)
    n = len(model.output_specs())
    return out[:n], out[n:]


def test_every_family_has_tiny_and_small_presets():
    for family in families():
        sizes = {p.size for p in presets() if p.family == family}
        assert {"tiny", "small"} <= sizes, f"family {family} lacks a tiny or small preset: {sizes}"


@pytest.mark.parametrize("name", ALL)
def test_outputs_and_states_match_specs(name):
    model = build_preset(name)
    tokens, states = _inputs(model, 3, 7)
    outs, new_states = _step(model, tokens, [7, 3, 0], [True, False, False], states)
    for spec, t in zip(model.output_specs(), outs):
        assert list(t.shape) == [{"batch": 3, "segment": 7}.get(d, d) for d in spec.shape]
    assert len(new_states) == len(model.state_specs())
    for spec, t in zip(model.state_specs(), new_states):
        assert tuple(t.shape) == (3, *spec.shape) and t.dtype == torch.float32


@pytest.mark.parametrize("name", TINY)
def test_padding_changes_neither_real_outputs_nor_next_state(name):
    model = build_preset(name)
    tokens, states = _inputs(model, 2, 12)
    outs, new = _step(model, tokens, [12, 5], [False, False], states)
    alone_outs, alone_new = _step(model, tokens[1:, :5], [5], [False], tuple(s[1:] for s in states))
    for spec, padded, alone in zip(model.output_specs(), outs, alone_outs):
        if spec.segment_axis is None:  # read from memory, not per token
            torch.testing.assert_close(padded[1], alone[0], atol=1e-5, rtol=0)
            continue
        torch.testing.assert_close(padded[1, :5], alone[0], atol=1e-5, rtol=0)
        assert torch.count_nonzero(padded[1, 5:]) == 0, "padded positions must be zero"
    for padded, alone in zip(new, alone_new):
        torch.testing.assert_close(padded[1], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_rows_are_independent(name):
    model = build_preset(name)
    tokens, states = _inputs(model, 3, 9, seed=1)
    lengths, reset = [9, 4, 7], [False, True, False]
    outs, new = _step(model, tokens, lengths, reset, states)
    for row in range(3):
        o, n = _step(model, tokens[row : row + 1], [lengths[row]], [reset[row]], tuple(s[row : row + 1] for s in states))
        for a, b in zip(outs + new, o + n):
            torch.testing.assert_close(a[row], b[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [n for n in TINY if build_preset(n).state_specs()])
def test_reset_replaces_state_by_learned_initial(name):
    model = build_preset(name)
    tokens, garbage = _inputs(model, 2, 6, seed=2)
    zeros = tuple(torch.zeros_like(s) for s in garbage)
    out_a, new_a = _step(model, tokens, [6, 6], [True, True], garbage)
    out_b, new_b = _step(model, tokens, [6, 6], [True, True], zeros)
    for a, b in zip(out_a + new_a, out_b + new_b):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    _, not_reset = _step(model, tokens, [6, 6], [False, False], garbage)
    assert not torch.allclose(not_reset[0], new_a[0]), "without reset the incoming state must matter"


@pytest.mark.parametrize("name", [n for n in TINY if build_preset(n).state_specs()])
def test_empty_row_keeps_its_state(name):
    model = build_preset(name)
    tokens, states = _inputs(model, 2, 5, seed=3)
    _, new = _step(model, tokens, [5, 0], [False, False], states)
    torch.testing.assert_close(new[0][1], states[0][1], atol=0, rtol=0)
    assert not torch.allclose(new[0][0], states[0][0])


@pytest.mark.parametrize("name", [n for n in TINY if get_preset(n).family == "rmt" and get_preset(n).config.get("form", "decoder") == "decoder"])
def test_rmt_decoder_tokens_are_causal_but_write_memory_sees_all(name):
    model = build_preset(name)
    tokens, states = _inputs(model, 1, 10, seed=4)
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % model.vocab_size
    (a,), (ma,) = _step(model, tokens, [10], [False], states)
    (b,), (mb,) = _step(model, changed, [10], [False], states)
    torch.testing.assert_close(a[0, :7], b[0, :7], atol=0, rtol=0)
    assert not torch.allclose(a[0, 7:], b[0, 7:])
    assert not torch.allclose(ma, mb), "the write memory must see every real token"


def test_unknown_preset_lists_the_choices():
    with pytest.raises(RegistryError) as e:
        build_preset("rmt-huge")
    assert "rmt-huge" in str(e.value) and "rmt-tiny" in str(e.value)


def test_unknown_config_key_is_refused():
    with pytest.raises(MemxError, match="unknown config keys"):
        build_preset("rmt-tiny", num_memroy=3)


def test_same_seed_same_weights_other_seed_other_weights():
    assert build_preset("rmt-tiny", seed=0).weights_sha256() == build_preset("rmt-tiny", seed=0).weights_sha256()
    assert build_preset("rmt-tiny", seed=0).weights_sha256() != build_preset("rmt-tiny", seed=1).weights_sha256()
