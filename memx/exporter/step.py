"""The step wrapper the exporter traces, and the check that a module honours the contract."""

from __future__ import annotations

import torch
from torch import nn

from memx.errors import ContractError
from memx.models.base import SegmentModel, WholeStep


def state_input_name(name: str) -> str:
    return f"state_in.{name}"


def state_output_name(name: str) -> str:
    return f"state_out.{name}"


def example_inputs(model: SegmentModel, batch: int, segment: int) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing. Use batch >= 2 and segment >= 2 where the axis is dynamic:
    torch.export specialises dimensions of size 1."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab_size, (batch, segment), generator=g)
    lengths = torch.full((batch,), segment, dtype=torch.int64)
    lengths[-1] = max(1, segment - 1)
    reset = torch.zeros(batch, dtype=torch.bool)
    reset[0] = True
    states = tuple(torch.zeros(batch, *s.shape, dtype=getattr(torch, s.dtype)) for s in model.state_specs())
    return (tokens, lengths, reset, *states)


def check_contract(model: nn.Module, segment_len: int) -> None:
    """Run one step eagerly and check outputs/states against the declared specs."""
    if not isinstance(model, SegmentModel):
        raise ContractError("model does not implement the step contract", expected="a memx.models.SegmentModel", actual=type(model).__name__)
    specs, outs = model.state_specs(), model.output_specs()
    names = [s.name for s in specs] + [o.name for o in outs]
    if len(set(names)) != len(names):
        raise ContractError("state and output names must be unique", expected="unique names", actual=names)
    args = example_inputs(model, 2, segment_len)
    with torch.no_grad():
        result = WholeStep(model)(*args)
    if len(result) != len(outs) + len(specs):
        raise ContractError("step returned the wrong number of tensors", expected=f"{len(outs)} outputs + {len(specs)} states", actual=len(result))
    for spec, t in zip(specs, result[len(outs):]):
        want = (2, *spec.shape)
        if tuple(t.shape) != want or str(t.dtype).removeprefix("torch.") != spec.dtype:
            raise ContractError(f"state {spec.name!r} does not match its spec", expected=f"{spec.dtype}{list(want)}", actual=f"{t.dtype}{list(t.shape)}")
    for spec, t in zip(outs, result[: len(outs)]):
        if t.shape[0] != 2:
            raise ContractError(f"output {spec.name!r} has no batch axis first", expected=2, actual=list(t.shape))
