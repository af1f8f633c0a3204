"""∞-former (Martins, Marinho & Martins, ACL 2022), as a segment step.

Per layer, on top of a causal Transformer-XL-style short-term memory (STM: the layer's
inputs of the last ``stm_len`` real tokens, carried as state), a continuous long-term
memory (LTM) holds a signal x̄(t) = Bᵀψ(t) over t ∈ [0, 1], with ψ N Gaussian RBFs
(``num_memory`` = N) and B (N, d) carried as state.

* Attention to the LTM (closed form): K = B W_K, V = B W_V; s = qKᵀ/√d_h;
  μ = sigmoid(w_μ·s), σ² = softplus(w_σ·s) (≥ 1e-6); r_j = ∫N(t; μ, σ²)ψ_j(t)dt =
  N(μ; μ_j, σ² + σ_j²); z = rV, projected and added to the STM attention output.
* Update (unbounded memory): the old signal, sampled at M_s points, is contracted to
  [0, τ]; the STM's contents (the vectors leaving it) go to [τ, 1]; B_new = G_infᵀ[X_old; X].
  The first fit (no LTM yet) is B = G_Lᵀ X, selected with ``where``. G_L and G_inf are
  ridge-regression matrices computed once in float64 and stored as buffers: no inverse
  runs in the graph. B_past is detached, as in the paper.
* Sticky memories: the old signal is sampled where this step's attention put its mass,
  by deterministic inverse-CDF placement over ``density_bins`` bins (Erf for the bin
  masses, cumulative sum, compare-and-count for the bin index): sorted by construction,
  no random sampling in the graph.

State: per layer ``ltm{l}`` (N, d) and ``stm{l}`` (stm_len, d); shared ``stm_valid``
(stm_len,) and ``has_ltm`` (1,). The initial state is all zeros (nothing remembered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from memx.models.base import OutputSpec, SegmentModel, StateSpec
from memx.models.layers import (
    BackboneConfig, FeedForward, MultiHeadAttention, SegmentEmbedding, cache_then_causal_mask, init_params, last_real, token_valid, width_aware_init,
)
from memx.models.decode import OPEN, CacheSpec, attend, causal_slots, embed_at, head_cache, real_logits, token_cache, write_slots
from memx.models.registry import register_family, register_preset

SIGMA2_MIN = 1e-6


# --- the continuous signal (float64 numpy: computed once, stored as buffers) ----------------
def rbf_basis(num_basis: int, widths: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Centres and widths of N Gaussian RBFs: linspace(0, 1, N / len(widths)) × widths."""
    if num_basis % len(widths):
        raise ValueError(f"num_memory ({num_basis}) must be a multiple of the number of basis widths ({len(widths)})")
    centres = np.linspace(0.0, 1.0, num_basis // len(widths))
    mu = np.concatenate([centres for _ in widths])
    sigma = np.concatenate([np.full_like(centres, w) for w in widths])
    return mu, sigma


def rbf_values(t: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """ψ_j(t) = N(t; μ_j, σ_j²) for every t: (len(t), N)."""
    z = (t[:, None] - mu[None, :]) / sigma[None, :]
    return np.exp(-0.5 * z * z) / (sigma[None, :] * math.sqrt(2 * math.pi))


def ridge_projection(positions: np.ndarray, mu: np.ndarray, sigma: np.ndarray, ridge: float) -> np.ndarray:
    """G (L, N) with B = Gᵀ X the ridge fit of vectors X (L, d) placed at ``positions``.

    G = Fᵀ(FFᵀ + λI)⁻¹ with F = [ψ(t_1) … ψ(t_P)]; as in the paper's code, zero targets
    are added outside [0, 1] (half as many points again on each side) so the signal decays
    there, and only the rows of the real positions are kept."""
    n = len(positions)
    step = 1.0 / n
    left = -step * np.arange(n // 2, 0, -1) - 0.5 * step  # zero targets below 0
    right = 1.0 + step * np.arange(n // 2) + 0.5 * step  # and above 1
    t = np.concatenate([left, positions, right])
    f = rbf_values(t, mu, sigma).T  # (N, P)
    g = f.T @ np.linalg.inv(f @ f.T + ridge * np.eye(len(mu)))  # (P, N)
    return g[len(left) : len(left) + n]


def gaussian_rbf_integral(mu: torch.Tensor, sigma2: torch.Tensor, centres: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """r_j = ∫ N(t; μ, σ²) ψ_j(t) dt = N(μ; μ_j, σ² + σ_j²). mu, sigma2 (..., 1) -> (..., N)."""
    var = sigma2 + widths * widths  # (..., N)
    return torch.exp(-0.5 * (mu - centres) ** 2 / var) / torch.sqrt(2 * math.pi * var)


def bin_masses(mu: torch.Tensor, sigma2: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mass of N(μ, σ²) in each bin [e_k, e_k+1): Φ differences via Erf. (..., 1) -> (..., D)."""
    cdf = 0.5 * (1.0 + torch.erf((edges - mu) / torch.sqrt(2.0 * sigma2)))  # (..., D+1)
    return cdf[..., 1:] - cdf[..., :-1]


def inverse_cdf_points(density: torch.Tensor, samples: int) -> torch.Tensor:
    """Deterministic placement of ``samples`` points in [0, 1] by a piecewise-uniform density
    over D equal bins (B, D) -> (B, samples), sorted: point m is the ((m + ½)/samples)-quantile."""
    bins = density.shape[-1]
    p = density / density.sum(-1, keepdim=True)  # (B, D)
    cdf = torch.cumsum(p, dim=-1)  # (B, D)
    q = (torch.arange(samples, dtype=density.dtype, device=density.device) + 0.5) / samples  # (M_s,)
    k = (cdf.unsqueeze(1) < q[None, :, None]).sum(-1).clamp(max=bins - 1)  # (B, M_s): bin of each quantile
    below = torch.gather(torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1]], dim=1), 1, k)  # mass before bin k
    mass = torch.gather(p, 1, k).clamp(min=1e-12)
    frac = ((q[None, :] - below) / mass).clamp(0.0, 1.0)
    return (k.to(density.dtype) + frac) / bins


@dataclass
class InfFormerConfig(BackboneConfig):
    """``num_memory`` is N, the number of basis functions of each layer's long-term memory."""

    num_memory: int = 16
    stm_len: int = 0  # short-term memory (cached tokens); 0 means max_segment_len
    basis_widths: list[float] = field(default_factory=lambda: [0.05, 0.1])
    ridge: float = 0.5  # λ of the ridge regression
    tau: float = 0.75  # the old signal is contracted to [0, tau]
    samples: int = 0  # M_s points sampled from the old signal; 0 means 2 × N
    sticky: bool = True
    density_bins: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        self.basis_widths = [float(w) for w in self.basis_widths]  # a list: configs round-trip through JSON
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau must be in (0, 1), got {self.tau}")
        if self.ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")
        if not self.basis_widths or self.num_memory % len(self.basis_widths):
            raise ValueError(f"num_memory ({self.num_memory}) must be a multiple of the number of basis widths ({len(self.basis_widths)})")
        if self.stm_len < 0 or self.samples < 0 or self.density_bins < 1:
            raise ValueError("stm_len and samples must be >= 0, density_bins >= 1")

    @property
    def cache_len(self) -> int:
        return self.stm_len or self.max_segment_len

    @property
    def old_samples(self) -> int:
        return self.samples or 2 * self.num_memory


class LongTermAttention(nn.Module):
    """Closed-form continuous attention over the LTM signal, per head."""

    def __init__(self, c: InfFormerConfig):
        super().__init__()
        self.n_heads, self.d_head = c.n_heads, c.d_model // c.n_heads
        self.kv_proj = nn.Linear(c.d_model, 2 * c.d_model)
        self.mu_proj = nn.Linear(c.num_memory, 1)
        self.sigma_proj = nn.Linear(c.num_memory, 1)
        self.out_proj = nn.Linear(c.d_model, c.d_model)

    def forward(self, q: torch.Tensor, coeffs: torch.Tensor, centres: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, h, S, dh) queries, coeffs B (B, N, d) -> (output (B, S, d), μ, σ² (B, h, S, 1))."""
        return self.read(q, *self.memory_kv(coeffs), centres, widths)

    def memory_kv(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K = B W_K, V = B W_V per head: (B, h, N, dh) each."""
        b, n, _ = coeffs.shape
        k, v = self.kv_proj(coeffs).chunk(2, dim=-1)
        k = k.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)  # (B, h, N, dh)
        v = v.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)  # (B, h, N, dh)
        return k, v

    def read(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, centres: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Continuous attention of queries q (B, h, S, dh) to the memory's K/V (B, h, N, dh)."""
        b, s = q.shape[0], q.shape[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))  # (B, h, S, N)
        mu = torch.sigmoid(self.mu_proj(scores))  # (B, h, S, 1)
        sigma2 = torch.clamp(nn.functional.softplus(self.sigma_proj(scores)), min=SIGMA2_MIN)  # (B, h, S, 1)
        r = gaussian_rbf_integral(mu, sigma2, centres, widths)  # (B, h, S, N)
        z = torch.matmul(r, v)  # (B, h, S, dh)
        z = z.transpose(1, 2).reshape(b, s, self.n_heads * self.d_head)  # (B, S, d)
        return self.out_proj(z), mu, sigma2


class InfLayer(nn.Module):
    def __init__(self, c: InfFormerConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(c.d_model)
        self.attn = MultiHeadAttention(c.d_model, c.n_heads)
        self.ltm = LongTermAttention(c)
        self.ln_ffn = nn.LayerNorm(c.d_model)
        self.ffn = FeedForward(c.d_model, c.d_ff)


@register_family("infformer")
class InfFormer(SegmentModel):
    config_class = InfFormerConfig

    def __init__(self, config: InfFormerConfig):
        super().__init__(config)
        c = config
        self.embed = SegmentEmbedding(c)
        self.layers = nn.ModuleList(InfLayer(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        width_aware_init(self, c.d_model)  # not GPT-2's 0.02: frequency-sort 71% -> 88%, majority 97.5% with it (docs/zoo.md)
        init_params(self.embed.pos)
        mu, sigma = rbf_basis(c.num_memory, c.basis_widths)
        L, ms = c.cache_len, c.old_samples
        first = ridge_projection((np.arange(L) + 0.5) / L, mu, sigma, c.ridge)  # (L, N)
        placed = np.concatenate([c.tau * (np.arange(ms) + 0.5) / ms, c.tau + (1 - c.tau) * (np.arange(L) + 0.5) / L])
        unbounded = ridge_projection(placed, mu, sigma, c.ridge)  # (M_s + L, N)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        self.register_buffer("centres", f32(mu), persistent=False)
        self.register_buffer("widths", f32(sigma), persistent=False)
        self.register_buffer("g_first", f32(first), persistent=False)
        self.register_buffer("g_old", f32(unbounded[:ms]), persistent=False)
        self.register_buffer("g_new", f32(unbounded[ms:]), persistent=False)
        self.register_buffer("uniform_points", f32((np.arange(ms) + 0.5) / ms), persistent=False)
        self.register_buffer("bin_edges", f32(np.linspace(0.0, 1.0, c.density_bins + 1)), persistent=False)

    @property
    def is_causal(self) -> bool:
        return True

    def state_specs(self) -> list[StateSpec]:
        c = self.config
        specs = []
        for i in range(c.n_layers):
            specs += [StateSpec(f"ltm{i}", (c.num_memory, c.d_model)), StateSpec(f"stm{i}", (c.cache_len, c.d_model))]
        return specs + [StateSpec("stm_valid", (c.cache_len,)), StateSpec("has_ltm", (1,))]

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ("batch", "segment", self.config.vocab_size))]

    # --- pieces -------------------------------------------------------------------------------
    def _stm_mask(self, valid: torch.Tensor, cache_valid: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, L+S): the cache's real entries, then causal real tokens."""
        return cache_then_causal_mask(valid, cache_valid)

    def _last_real(self, cache: torch.Tensor, new: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The last L real entries of [cache (B, L, ...); new (B, S, ...)] (new has lengths[b] real)."""
        return last_real(cache, new, lengths)

    def _sample_points(self, mu: torch.Tensor, sigma2: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Where to sample the old signal (B, M_s): sticky = by this step's attention density."""
        b = mu.shape[0]
        if not self.config.sticky:
            return self.uniform_points.unsqueeze(0).expand(b, -1)
        mass = bin_masses(mu, sigma2, self.bin_edges)  # (B, h, S, D)
        mass = (mass * valid[:, None, :, None].to(mass.dtype)).sum(dim=(1, 2))  # (B, D) over heads and real queries
        density = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12) + 1e-3  # a floor keeps every bin reachable
        return inverse_cdf_points(density, self.config.old_samples)

    def _update_ltm(self, coeffs: torch.Tensor, leaving: torch.Tensor, points: torch.Tensor, has_ltm: torch.Tensor, has_cache: torch.Tensor) -> torch.Tensor:
        """New B (B, N, d) from the old signal sampled at ``points`` and the vectors leaving the STM."""
        old = coeffs.detach()
        psi = gaussian_rbf_integral(points.unsqueeze(-1), torch.zeros_like(points).unsqueeze(-1), self.centres, self.widths)  # (B, M_s, N): ψ(u)
        x_old = torch.matmul(psi, old)  # (B, M_s, d)
        continued = torch.matmul(self.g_old.t(), x_old) + torch.matmul(self.g_new.t(), leaving)  # (B, N, d)
        first = torch.matmul(self.g_first.t(), leaving)  # (B, N, d)
        fitted = torch.where(has_ltm[:, :, None] > 0.5, continued, first)
        return torch.where(has_cache[:, :, None] > 0.5, fitted, coeffs)

    # --- the step ---------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *state: torch.Tensor):
        c = self.config
        state = self.zeroed_on_reset(reset, state)  # rows start from nothing remembered
        ltms, stms = list(state[0 : 2 * c.n_layers : 2]), list(state[1 : 2 * c.n_layers : 2])
        stm_valid, has_ltm = state[-2], state[-1]  # (B, L), (B, 1)
        s = tokens.shape[1]
        valid = token_valid(lengths, s, tokens)  # (B, S)
        cache_valid = stm_valid > 0.5  # (B, L)
        has_cache = cache_valid.any(dim=1, keepdim=True).to(torch.float32)  # (B, 1)
        mask = self._stm_mask(valid, cache_valid)
        ltm_on = has_ltm[:, :, None]  # (B, 1, 1)
        h = self.embed(tokens)  # (B, S, d)
        new_ltm, new_stm = [], []
        for layer, coeffs, cache in zip(self.layers, ltms, stms):
            x_in = h
            hn = layer.ln_attn(h)
            context = layer.ln_attn(torch.cat([cache, h], dim=1))  # (B, L+S, d)
            short = layer.attn(hn, context, mask)
            long, mu, sigma2 = layer.ltm(layer.attn.queries(hn), coeffs, self.centres, self.widths)
            h = h + short + long * ltm_on
            h = h + layer.ffn(layer.ln_ffn(h))
            leaving = cache * stm_valid.unsqueeze(-1)  # (B, L, d): the STM's contents go to the LTM
            points = self._sample_points(mu, sigma2, valid)
            new_ltm.append(self._update_ltm(coeffs, leaving, points, has_ltm, has_cache))
            new_stm.append(self._last_real(cache, x_in * valid.unsqueeze(-1).to(h.dtype), lengths))
        new_valid = self._last_real(stm_valid, valid.to(stm_valid.dtype), lengths)  # (B, L)
        new_has = torch.maximum(has_ltm, has_cache)
        logits = self.head(self.ln_f(h)) * valid.unsqueeze(-1).to(h.dtype)  # (B, S, V)
        out_state = []
        for a, b in zip(new_ltm, new_stm):
            out_state += [a, b]
        out_state += [new_valid, new_has]
        return (logits, *(self.keep_if_empty(lengths, n, o) for n, o in zip(out_state, state)))


    # --- decoding: tokens read the STM (reset applied) and the LTM; neither changes in a segment --
    def decode_support(self) -> str | None:
        return None

    def decode_cache_specs(self, capacity: int) -> list[CacheSpec]:
        c = self.config
        h, dh = c.n_heads, c.d_model // c.n_heads
        specs = []
        for i in range(c.n_layers):
            specs += [head_cache(f"stm_k{i}", h, c.cache_len, dh, OPEN), head_cache(f"stm_v{i}", h, c.cache_len, dh, OPEN),
                      head_cache(f"ltm_k{i}", h, c.num_memory, dh, OPEN), head_cache(f"ltm_v{i}", h, c.num_memory, dh, OPEN)]
        specs += [CacheSpec("stm_valid", (c.cache_len,), OPEN), CacheSpec("ltm_on", (1,), OPEN)]
        for i in range(c.n_layers):
            specs += [token_cache(f"k{i}", h, capacity, dh), token_cache(f"v{i}", h, capacity, dh)]
        return specs

    def decode_open(self, reset: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.zeroed_on_reset(reset, state)  # rows start from nothing remembered, as in forward
        cache = []
        for i, layer in enumerate(self.layers):
            stm_k, stm_v = layer.attn.keys_values(layer.ln_attn(state[2 * i + 1]))  # (B, h, L, dh)
            cache += [stm_k, stm_v, *layer.ltm.memory_kv(state[2 * i])]
        return (*cache, state[-2], state[-1])

    def decode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        per_layer, stm_valid, ltm_on = cache[: 4 * c.n_layers], cache[4 * c.n_layers], cache[4 * c.n_layers + 1]
        tok_cache = cache[4 * c.n_layers + 2 :]
        n, capacity = tokens.shape[1], tok_cache[0].shape[2]
        stm = (stm_valid > 0.5).unsqueeze(1).expand(-1, n, -1)  # (B, n, L)
        mask = torch.cat([stm, causal_slots(position, n, capacity)], dim=2).unsqueeze(1)  # (B, 1, n, L+G)
        h = embed_at(self.embed.tok, self.embed.pos, tokens, position)  # (B, n, d)
        written = []
        for i, layer in enumerate(self.layers):
            stm_k, stm_v, ltm_k, ltm_v = per_layer[4 * i : 4 * i + 4]
            hn = layer.ln_attn(h)
            k_new, v_new = layer.attn.keys_values(hn)  # (B, h, n, dh)
            k = write_slots(tok_cache[2 * i], k_new, position, lengths)
            v = write_slots(tok_cache[2 * i + 1], v_new, position, lengths)
            q = layer.attn.queries(hn)
            short = attend(layer.attn, q, (stm_k, stm_v), (k, v), mask)
            long, _, _ = layer.ltm.read(q, ltm_k, ltm_v, self.centres, self.widths)
            h = h + short + long * ltm_on[:, :, None]
            h = h + layer.ffn(layer.ln_ffn(h))
            written += [k, v]
        return (real_logits(self.head, self.ln_f, h, lengths), *written)  # logits (B, n, V)


register_preset("infformer-tiny", "infformer", size="tiny", description="∞-former: STM cache + continuous LTM (16 RBFs), sticky memories, d=32")
register_preset("infformer-plain-tiny", "infformer", size="tiny", description="∞-former without sticky memories (uniform resampling), d=32", sticky=False)
register_preset(
    "infformer-small", "infformer", size="small", description="∞-former, 4 layers, d=256, 64 RBFs, STM 128, sticky",
    vocab_size=1024, d_model=256, n_heads=4, n_layers=4, d_ff=1024, num_memory=64, max_segment_len=128, basis_widths=[0.01, 0.05],
)
