"""∞-former math: closed-form continuous attention, ridge fit, sticky placement, LTM rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memx.models import build_preset
from memx.models.infformer import (
    bin_masses,
    gaussian_rbf_integral,
    inverse_cdf_points,
    rbf_basis,
    rbf_values,
    ridge_projection,
)


@pytest.mark.parametrize("mu,sigma2", [(0.3, 0.01), (0.9, 1e-4), (0.5, 0.2), (0.02, 0.05)])
def test_closed_form_attention_equals_numerical_integration(mu, sigma2):
    centres, widths = rbf_basis(16, [0.05, 0.1])
    r = gaussian_rbf_integral(torch.tensor([[mu]], dtype=torch.float64), torch.tensor([[sigma2]], dtype=torch.float64),
                              torch.tensor(centres), torch.tensor(widths))[0].numpy()
    t = np.linspace(-4.0, 5.0, 400_001)
    density = np.exp(-0.5 * (t - mu) ** 2 / sigma2) / np.sqrt(2 * np.pi * sigma2)
    numeric = np.trapezoid(density[:, None] * rbf_values(t, centres, widths), t, axis=0)
    np.testing.assert_allclose(r, numeric, rtol=1e-5, atol=1e-8)


def test_ridge_fit_reconstructs_a_smooth_signal():
    centres, widths = rbf_basis(32, [0.05, 0.1])
    t = (np.arange(64) + 0.5) / 64
    x = np.stack([np.sin(np.pi * t) ** 2, np.sin(2 * np.pi * t) * np.sin(np.pi * t), 0.5 * np.sin(np.pi * t) ** 3], axis=1)  # (L, 3)
    g = ridge_projection(t, centres, widths, ridge=0.5)  # (L, N)
    assert g.shape == (64, 32)
    rebuilt = rbf_values(t, centres, widths) @ (g.T @ x)
    assert np.abs(rebuilt - x).max() < 0.01
    # and between the sample points too: it is a continuous signal
    mid = t[:-1] + 0.5 / 64
    truth = np.sin(np.pi * mid) ** 2
    assert np.abs(rbf_values(mid, centres, widths) @ (g.T @ x)[:, 0] - truth).max() < 0.01


def test_sticky_placement_is_sorted_deterministic_and_follows_the_density():
    g = torch.Generator().manual_seed(0)
    density = torch.rand(3, 32, generator=g)
    a, b = inverse_cdf_points(density, 24), inverse_cdf_points(density.clone(), 24)
    assert torch.equal(a, b)
    assert (a[:, 1:] >= a[:, :-1]).all() and (a >= 0).all() and (a <= 1).all()
    uniform = inverse_cdf_points(torch.ones(1, 16), 8)[0]
    torch.testing.assert_close(uniform, (torch.arange(8) + 0.5) / 8)
    peaked = torch.full((1, 10), 1e-3)
    peaked[0, 7] = 1.0  # nearly all mass in [0.7, 0.8)
    pts = inverse_cdf_points(peaked, 20)[0]
    assert ((pts >= 0.7) & (pts < 0.8)).float().mean() > 0.9


def test_bin_masses_sum_to_the_mass_inside_the_unit_interval():
    edges = torch.linspace(0, 1, 33, dtype=torch.float64)
    m = bin_masses(torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([[0.01]], dtype=torch.float64), edges)
    assert m.shape == (1, 32)
    torch.testing.assert_close(m.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)
    assert m.argmax() in (15, 16)


def _roll(model, segments, b=2, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = tuple(torch.zeros(b, *spec.shape) for spec in model.state_specs())
    history = []
    with torch.no_grad():
        for i in range(segments):
            tokens = torch.randint(0, model.vocab_size, (b, s), generator=g)
            out = model(tokens, torch.full((b,), s), torch.full((b,), i == 0), *state)
            state = out[1:]
            history.append({spec.name: t for spec, t in zip(model.state_specs(), state)})
    return history


def test_ltm_starts_empty_then_first_fit_then_unbounded_updates():
    model = build_preset("infformer-tiny")
    h = _roll(model, 4)
    assert torch.count_nonzero(h[0]["ltm0"]) == 0 and (h[0]["has_ltm"] == 0).all()  # nothing has left the STM yet
    assert (h[0]["stm_valid"][:, -8:] == 1).all() and (h[0]["stm_valid"][:, :-8] == 0).all()  # 8 of 32 cache entries filled
    first = h[1]["ltm0"]
    assert torch.count_nonzero(first) > 0 and (h[1]["has_ltm"] == 1).all()
    # the first fit is G_Lᵀ X of the STM contents alone (no old signal)
    torch.testing.assert_close(first, torch.matmul(model.g_first.t(), h[0]["stm0"]), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(h[2]["ltm0"], torch.matmul(model.g_first.t(), h[1]["stm0"]), atol=1e-4)  # the old signal is kept


def test_ltm_stays_bounded_over_a_long_stream():
    model = build_preset("infformer-tiny")
    h = _roll(model, 300, s=16)
    norms = [float(x["ltm0"].abs().max()) for x in h]
    assert max(norms) < 10 * max(norms[1:20]) + 1e-6
