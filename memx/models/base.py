"""The step contract (DESIGN.md §2) as a base class every family implements.

    step(tokens int64[B,S], lengths int64[B], reset bool[B], *extra_inputs, *state_in) -> (*outputs, *state_out)

A family declares its state tensors and outputs as specs; the exporter and the
runtimes read only those specs (through the manifest), never the module.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from memx.models.decode import CacheSpec


@dataclass(frozen=True)
class StateSpec:
    """One state tensor carried between segments: shape excludes the batch axis (axis 0)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class InputSpec:
    """An extra step input beyond tokens/lengths/reset (an encoder-decoder's decoder ids, a
    per-row speaker id): ``shape`` excludes the batch axis (axis 0) and may use "segment" for
    an axis as long as the tokens' (padded and masked by ``lengths`` like them). Integer
    inputs declare ``range`` = (low, high), high exclusive, which runtimes check; ``pad`` is
    what pools put at padded positions."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "int64"
    range: tuple[int, int] | None = None
    pad: float = 0

    def concrete_shape(self, batch: int, segment: int) -> tuple[int, ...]:
        """Batch first, "segment" axes the tokens' length."""
        return (batch, *(segment if d == "segment" else int(d) for d in self.shape))

    def example(self, batch: int, segment: int, gen: torch.Generator) -> torch.Tensor:
        """Random values this input may take: ids in its range, bools, floats ~ N(0, 1)."""
        shape = self.concrete_shape(batch, segment)
        dtype = getattr(torch, self.dtype)
        if self.dtype == "bool":
            return torch.randint(0, 2, shape, generator=gen).to(torch.bool)
        if dtype.is_floating_point:
            return torch.randn(shape, generator=gen).to(dtype)
        low, high = self.range if self.range is not None else (0, 2)
        return torch.randint(low, high, shape, generator=gen).to(dtype)


RESERVED_INPUTS = ("tokens", "lengths", "reset")


@dataclass(frozen=True)
class OutputSpec:
    """One per-step output; ``shape`` uses "batch"/"segment" for the dynamic axes."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    # Positions past lengths[b] along the segment axis are zero (padding carries no value).
    segment_axis: int | None = 1


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph of a model's step. Graphs run in the listed order; an input is a
    step input ("tokens", "lengths", "reset", an extra input, "state_in.<s>") or an intermediate produced
    by an earlier graph; outputs are step outputs, intermediates and "state_out.<s>"."""

    name: str
    role: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class SegmentModel(nn.Module):
    """Base class of every exportable memory model.

    Subclasses set ``family``, take a config dataclass, and implement
    :meth:`state_specs`, :meth:`output_specs` and :meth:`forward`.
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type]
    # "package.module:function" that rebuilds this model from the manifest's config, recorded in
    # the package for processes that do not know the family (memx.models.reference)
    factory: str | None = None

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # --- contract ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def max_segment_len(self) -> int:
        return int(self.config.max_segment_len)

    @property
    def is_causal(self) -> bool:
        """True when no token output depends on later tokens of its segment (decoder-style)."""
        return False

    def state_specs(self) -> list[StateSpec]:
        raise NotImplementedError

    def output_specs(self) -> list[OutputSpec]:
        raise NotImplementedError

    def input_specs(self) -> list[InputSpec]:
        """Extra step inputs, passed to forward after ``reset`` and before the states (none by default)."""
        return []

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *inputs_and_state: torch.Tensor):
        raise NotImplementedError

    # --- multi-graph models (Memformer: encoder + decoder) ---------------------------------
    def graph_specs(self) -> list[GraphSpec]:
        """The graphs of one step; by default a single graph "step" with the contract's I/O."""
        states = [s.name for s in self.state_specs()]
        return [GraphSpec(
            "step", "step",
            ("tokens", "lengths", "reset", *(i.name for i in self.input_specs()), *(f"state_in.{n}" for n in states)),
            (*(o.name for o in self.output_specs()), *(f"state_out.{n}" for n in states)),
        )]

    def intermediate_specs(self) -> list[OutputSpec]:
        """Tensors one graph hands to a later one (none for single-graph models)."""
        return []

    def graph_module(self, name: str) -> nn.Module:
        """A module whose forward(*inputs) returns the graph's outputs, in spec order."""
        if name != "step":
            raise KeyError(name)
        return WholeStep(self)

    # --- token-by-token decoding (memx.models.decode) ---------------------------------------
    def decode_support(self) -> str | None:
        """None when the model has decode graphs; otherwise why not (shown by export and generate)."""
        if not self.is_causal:
            return f"{self.family} is not causal: a token's output depends on later tokens of its segment, so it cannot be produced before them"
        return f"the {self.family} family defines no decode graphs"

    def decode_cache_specs(self, capacity: int) -> list["CacheSpec"]:
        """The decode cache for segments of up to ``capacity`` tokens (decode_support() is None)."""
        raise NotImplementedError

    def decode_open(self, reset: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(reset, *state_in) -> the cache entries written by "decode_open", in spec order."""
        raise NotImplementedError

    def decode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor, position: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(tokens (B, n), lengths, position, *every cache entry) -> (logits (B, n, V), *entries written by "decode")."""
        raise NotImplementedError

    # --- helpers for subclasses -------------------------------------------------------
    @staticmethod
    def select_initial(reset: torch.Tensor, initial: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """state = where(reset, learned initial, state_in); initial has no batch axis."""
        r = reset.reshape(-1, *([1] * initial.dim()))  # (B, 1, ..., 1)
        return where(r, initial.unsqueeze(0).to(state.dtype), state)

    @staticmethod
    def zeroed_on_reset(reset: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Rows with reset start from an all-zero state (families whose initial state is nothing remembered)."""
        keep = (~reset).to(torch.float32)  # (B,)
        return tuple(t * keep.reshape(-1, *([1] * (t.dim() - 1))) for t in state)

    @staticmethod
    def keep_if_empty(lengths: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """A row with lengths[b] == 0 (no tokens this step) keeps its state."""
        has_tokens = (lengths > 0).reshape(-1, *([1] * (new.dim() - 1)))  # (B, 1, ..., 1)
        return where(has_tokens, new, old)

    # --- identity ------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def weights_sha256(self) -> str:
        """Hash of every parameter and buffer (name, dtype, shape, bytes), order-independent."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
        return h.hexdigest()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def where(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.where that every runtime executes: ONNX Runtime has no Where kernel for bool and
    TensorRT none for uint8, so bool tensors are selected as int32 and cast back."""
    if a.dtype == torch.bool:
        return torch.where(condition, a.to(torch.int32), b.to(torch.int32)).to(torch.bool)
    return torch.where(condition, a, b)


class WholeStep(nn.Module):
    """The single-graph step: forward(tokens, lengths, reset, *state) as one flat tuple."""

    def __init__(self, model: SegmentModel):
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
