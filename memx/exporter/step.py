"""Names of the state inputs/outputs and example inputs for tracing (contract.py checks the module)."""

from __future__ import annotations

import torch

from memx.models.base import SegmentModel


def state_input_name(name: str) -> str:
    return f"state_in.{name}"


def state_output_name(name: str) -> str:
    return f"state_out.{name}"


def example_extras(model: SegmentModel, batch: int, segment: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    gen = gen or torch.Generator().manual_seed(1)
    return tuple(spec.example(batch, segment, gen) for spec in model.input_specs())


def zero_states(model: SegmentModel, batch: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(batch, *s.shape, dtype=getattr(torch, s.dtype)) for s in model.state_specs())


def example_inputs(model: SegmentModel, batch: int, segment: int) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing: (tokens, lengths, reset, *extra inputs, *states). Use batch >= 2 and
    segment >= 2 where the axis is dynamic: torch.export specialises dimensions of size 1."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab_size, (batch, segment), generator=g)
    lengths = torch.full((batch,), segment, dtype=torch.int64)
    lengths[-1] = max(1, segment - 1)
    reset = torch.zeros(batch, dtype=torch.bool)
    reset[0] = True
    return (tokens, lengths, reset, *example_extras(model, batch, segment, g), *zero_states(model, batch))
