"""The step contract (DESIGN.md §2), checked on the module before export and on the graphs after.

Before export, eagerly on small random inputs (any model, memx's families included):

- the step returns the declared outputs and states (count, shapes at batch 2, dtypes, batch axis first);
- **padding invariance**: a row padded to the segment length gives the same real outputs and
  the same next state as the row cut to its own length (padding carries no value), and its
  outputs past ``lengths`` are zero;
- **reset = fresh stream**: a reset row gives the same result whatever state it was handed;
- **an empty row keeps its state**: ``lengths == 0`` leaves the row's state as it came in.

After export, on each ONNX graph: the batch axis (and the segment axis) of every input and
output is symbolic, not a number the trace baked in, and every axis declared fixed is fixed
(not a size computed from the data, which runtimes could neither feed nor preallocate).

Each violation is a :class:`~memx.errors.ContractError` naming the tensor and the measured
difference; ``export(..., contract_checks=False)`` skips the eager checks (recorded in the
manifest's provenance).
"""

from __future__ import annotations

from typing import Callable

import onnx
import torch

from memx.errors import ContractError, ExportError
from memx.exporter.step import example_extras, example_inputs, zero_states
from memx.models.base import RESERVED_INPUTS, InputSpec, SegmentModel, WholeStep
from memx.package.manifest import DTYPES, GraphInfo, TensorInfo

ATOL, RTOL = 1e-4, 1e-4  # float32 sums in another order (cut vs padded) differ by rounding only
SKIP_HINT = "fix the model, or export with contract_checks=False (memx export --skip-contract-checks) if you know why"


def check_declared_io(model: SegmentModel, segment_len: int) -> None:
    """Run one step eagerly and check outputs/states against the declared specs."""
    if not isinstance(model, SegmentModel):
        raise ContractError("model does not implement the step contract", expected="a memx.models.SegmentModel", actual=type(model).__name__)
    specs, outs = model.state_specs(), model.output_specs()
    names = [s.name for s in specs] + [o.name for o in outs]
    if len(set(names)) != len(names):
        raise ContractError("state and output names must be unique", expected="unique names", actual=names)
    check_input_specs(model.input_specs(), taken=names)
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
        if t.dim() == 0 or t.shape[0] != 2:
            raise ContractError(f"output {spec.name!r} has no batch axis first", expected=2, actual=list(t.shape))
        want = [2 if d == "batch" else segment_len if d == "segment" else d for d in spec.shape]
        if list(t.shape) != want:
            raise ContractError(f"output {spec.name!r} does not have its declared shape (at batch 2, segment {segment_len})",
                                expected=f"{list(spec.shape)} = {want}", actual=list(t.shape),
                                hint="a size that depends on the data (nonzero, masked selection) cannot be preallocated by the runtimes; pad to a fixed size")


def check_input_specs(inputs: list[InputSpec], *, taken: list[str]) -> None:
    """Extra inputs: unique names that are not tokens/lengths/reset, a state or an output;
    shapes of fixed dims and "segment"; a known dtype; integers with a (low, high) range."""
    seen: set[str] = set()
    for spec in inputs:
        if not spec.name or spec.name in RESERVED_INPUTS or spec.name.startswith(("state_in.", "state_out.")) or spec.name in taken or spec.name in seen:
            raise ContractError(f"extra input name {spec.name!r} is taken", expected=f"a new name (not {list(RESERVED_INPUTS)}, a state or an output)", actual=spec.name)
        seen.add(spec.name)
        if not all(d == "segment" or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in spec.shape):
            raise ContractError(f"extra input {spec.name!r} has a shape memx cannot feed", expected='dims after the batch axis: positive ints or "segment"', actual=list(spec.shape))
        if spec.dtype not in DTYPES:
            raise ContractError(f"extra input {spec.name!r} has an unknown dtype", expected=f"one of {list(DTYPES)}", actual=spec.dtype)
        integer = spec.dtype.startswith(("int", "uint"))
        if integer and (spec.range is None or len(spec.range) != 2 or not spec.range[0] < spec.range[1]):
            raise ContractError(f"integer extra input {spec.name!r} needs its range of values", expected="range=(low, high) with low < high (high exclusive)", actual=spec.range)
        if integer and not spec.range[0] <= spec.pad < spec.range[1]:
            raise ContractError(f"extra input {spec.name!r}: its pad value is outside its range", expected=f"{spec.range[0]} <= pad < {spec.range[1]}", actual=spec.pad)


# --- behaviour ------------------------------------------------------------------------------
Step = Callable[..., tuple[torch.Tensor, ...]]


def _run(step: Step, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, states: tuple[torch.Tensor, ...],
         extras: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(step(tokens, lengths, reset, *extras, *states))


def _cut_row(inputs: list[InputSpec], extras: tuple[torch.Tensor, ...], row: int, length: int) -> tuple[torch.Tensor, ...]:
    """Row ``row`` of each extra input, its "segment" axes cut to ``length``."""
    out = []
    for spec, t in zip(inputs, extras):
        t = t[row : row + 1]
        for axis, d in enumerate(spec.shape, start=1):
            if d == "segment":
                t = t.narrow(axis, 0, length)
        out.append(t)
    return tuple(out)


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference beyond the tolerance's relative part (0 when within it)."""
    if a.shape != b.shape:
        return float("inf")
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    excess = (a64 - b64).abs() - RTOL * b64.abs()
    return float(excess.max()) if excess.numel() else 0.0


def _cut(t: torch.Tensor, axis: int | None, length: int) -> torch.Tensor:
    return t if axis is None else t.narrow(axis, 0, length)


def _warm_states(model: SegmentModel, step: Step, batch: int, segment: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """States after two full segments from a fresh start: what a running stream holds."""
    states = zero_states(model, batch)
    n_out = len(model.output_specs())
    for i in range(2):
        tokens = torch.randint(0, model.vocab_size, (batch, segment), generator=gen)
        out = _run(step, tokens, torch.full((batch,), segment), torch.full((batch,), i == 0), states, example_extras(model, batch, segment, gen))
        states = out[n_out:]
    return states


def check_behaviour(model: SegmentModel, segment_len: int) -> None:
    """Padding invariance, reset = fresh stream, empty rows keep their state (module docstring)."""
    step = WholeStep(model)
    gen = torch.Generator().manual_seed(1234)
    seg = min(max(2, min(segment_len, 8)), model.max_segment_len)
    outs, specs, inputs = model.output_specs(), model.state_specs(), model.input_specs()
    n_out = len(outs)
    warm = _warm_states(model, step, 3, seg, gen)
    tokens = torch.randint(0, model.vocab_size, (3, seg), generator=gen)
    extras = example_extras(model, 3, seg, gen)
    no_reset = torch.zeros(3, dtype=torch.bool)

    # padding invariance: rows of lengths seg, seg-1, 1 padded with random tokens vs each row cut
    lengths = torch.tensor([seg, max(1, seg - 1), 1])
    padded = _run(step, tokens, lengths, no_reset, warm, extras)
    for row in range(3):
        n = int(lengths[row])
        alone = _run(step, tokens[row : row + 1, :n], lengths[row : row + 1], no_reset[:1], tuple(s[row : row + 1] for s in warm), _cut_row(inputs, extras, row, n))
        for spec, got, want in zip(outs, padded[:n_out], alone[:n_out]):
            axis = spec.segment_axis if spec.segment_axis is not None and got.dim() > 1 else None
            diff = _difference(_cut(got[row : row + 1], axis, n), want)
            if not diff <= ATOL:
                raise ContractError(f"output {spec.name!r} depends on padding: a row of {n} real tokens padded to {seg} differs from the same row cut to {n}",
                                    expected=f"difference <= {ATOL:g}", actual=f"{diff:.3g}", hint=SKIP_HINT)
            if axis is not None and n < got.shape[axis]:
                tail = got[row : row + 1].narrow(axis, n, got.shape[axis] - n)
                if tail.abs().max() > 0:
                    raise ContractError(f"output {spec.name!r} is not zero past lengths (the padded positions carry values)",
                                        expected="0 past lengths[b]", actual=f"max |value| {float(tail.abs().max()):.3g}", hint=SKIP_HINT)
        for spec, got, want in zip(specs, padded[n_out:], alone[n_out:]):
            diff = _difference(got[row : row + 1], want)
            if not diff <= ATOL:
                raise ContractError(f"the next state {spec.name!r} depends on padding: a row of {n} real tokens padded to {seg} differs from the same row cut to {n}",
                                    expected=f"difference <= {ATOL:g}", actual=f"{diff:.3g}", hint=SKIP_HINT)

    # reset = fresh stream: a reset row ignores the state it is handed
    full = torch.full((3,), seg)
    reset = torch.ones(3, dtype=torch.bool)
    from_warm = _run(step, tokens, full, reset, warm, extras)
    from_zero = _run(step, tokens, full, reset, tuple(torch.zeros_like(s) for s in warm), extras)
    for name, got, want in zip([o.name for o in outs] + [s.name for s in specs], from_warm, from_zero):
        diff = _difference(got, want)
        if not diff <= ATOL:
            raise ContractError(f"a reset row still depends on the state it was given ({name!r} differs)", expected=f"difference <= {ATOL:g}",
                                actual=f"{diff:.3g}", hint=SKIP_HINT)

    # an empty row keeps its state
    empty = torch.tensor([seg, 0, seg])
    kept = _run(step, tokens, empty, no_reset, warm, extras)
    for spec, got, was in zip(specs, kept[n_out:], warm):
        diff = _difference(got[1:2], was[1:2])
        if not diff <= ATOL:
            raise ContractError(f"a row with lengths == 0 changed its state {spec.name!r} (it must keep the state it came with)",
                                expected=f"difference <= {ATOL:g}", actual=f"{diff:.3g}", hint=SKIP_HINT)


# --- the exported graphs -----------------------------------------------------------------------
def _dim_text(dim: onnx.TensorShapeProto.Dimension) -> str:
    return dim.dim_param if dim.HasField("dim_param") else str(dim.dim_value) if dim.HasField("dim_value") else "?"


def check_symbolic_axes(proto: onnx.ModelProto, graph: GraphInfo) -> None:
    """Every "batch"/"segment" axis the manifest declares is symbolic in the ONNX graph."""
    values = {v.name: v for v in list(proto.graph.input) + list(proto.graph.output)}
    for t in list(graph.inputs) + list(graph.outputs):
        _check_axes(values.get(t.name), t, graph.name)


def _check_axes(value: onnx.ValueInfoProto | None, info: TensorInfo, graph: str) -> None:
    if value is None or not value.type.tensor_type.HasField("shape"):
        return
    dims = value.type.tensor_type.shape.dim
    for axis, declared in enumerate(info.shape):
        if isinstance(declared, int) and axis < len(dims) and dims[axis].HasField("dim_param"):
            raise ExportError(
                f"graph {graph!r}: axis {axis} of {info.name!r} has a size the graph computes ({dims[axis].dim_param}) where the manifest declares {declared}",
                expected=f"{info.name} {info.shape}", actual=f"{info.name} [{', '.join(_dim_text(d) for d in dims)}]",
                hint="a size that depends on the data (nonzero, masked selection, unique) cannot be fed or preallocated by the runtimes; pad to a fixed size",
            )
        if isinstance(declared, str) and axis < len(dims) and dims[axis].HasField("dim_value"):
            raise ExportError(
                f"graph {graph!r}: the {declared} axis (axis {axis}) of {info.name!r} was fixed to {dims[axis].dim_value} by the export",
                expected=f"{info.name} {info.shape}", actual=f"{info.name} [{', '.join(_dim_text(d) for d in dims)}]",
                hint="the model reads this size as a Python number (int(x.shape[i]), a shape in an if, a .item()); keep shapes as tensors "
                     "(x.shape[i] used in torch ops, x.size(i) without int())",
            )
