"""Bring your own memory model: ``memx.wrap`` turns a user's ``nn.Module`` and a short
description of its memory into an exportable step (a :class:`SegmentModel`).

    step = memx.wrap(MyMemoryLM(cfg),
                     state={"memories": memx.State((8, 256), count=cfg.n_layers)},  # a list of per-layer memories
                     vocab_size=cfg.vocab_size, max_segment_len=128, mask="attention_mask")
    memx.export(step, "my.memx")

The module is called as ``module(tokens, **states, [mask=...])`` (or through ``call``) and may
return a tensor, tuples, lists, dicts or Hugging Face ``ModelOutput``s, nested; they are
flattened with stable names ("logits", "memories.0", "1.hidden"). memx writes what every step
needs around it: the reset to the initial state, rows with ``lengths == 0`` keeping their
state, outputs zeroed past ``lengths``, the padding mask from ``lengths``, memories whose
batch axis is not first (moved), bool memories (selected as int32 inside the graph, which every runtime runs).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from memx.errors import ContractError
from memx.models.base import InputSpec, OutputSpec, SegmentModel, StateSpec, where



@dataclass(frozen=True)
class State:
    """One memory of the user's module, as the module sees it (without the batch axis).

    shape: the memory's dims other than batch, in the module's order; batch_axis: where the
    module wants the batch axis (memx keeps it first and moves it); init: what a fresh stream
    starts from: "zeros", "learned" (a trained parameter, exported with the model), a tensor,
    or a callable returning one; count: a list of ``count`` such memories (per-layer lists).

    grows: a memory that grows from empty, Transformer-XL style, kept in a fixed buffer of
    ``shape[0]`` slots: the module gets the buffer and a bool validity mask (keyword ``mask``,
    default NAME_mask; True = a real entry) and returns under the memory's name the entries to
    append, (B, S, ...); memx appends each row's real ones and keeps the newest ``shape[0]``.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    batch_axis: int = 0
    init: Any = "zeros"
    count: int | None = None
    grows: bool = False
    mask: str | None = None


@dataclass(frozen=True)
class Input:
    """An extra step input the module takes by keyword (an encoder-decoder's decoder ids, a
    speaker id), without the batch axis: ``shape`` of fixed dims and "segment" (an axis as long
    as the tokens, padded and masked like them); integer inputs give ``range`` = (low, high),
    high exclusive; ``pad`` fills padded positions in pools. Callers pass it to every step:
    ``stream.step(tokens, decoder_ids=ids)``."""

    shape: tuple[int | str, ...]
    dtype: str = "int64"
    range: tuple[int, int] | None = None
    pad: float = 0


@dataclass
class WrapConfig:
    """The identity of a wrapped model in the manifest (the user's config flattened to JSON)."""

    vocab_size: int
    max_segment_len: int
    module: str
    user: dict[str, Any] = field(default_factory=dict)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Any config as JSON: dataclass, dict, Hugging Face ``PretrainedConfig`` (to_dict),
    a namespace or plain object (its attributes); values JSON cannot hold become their repr."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        raw = dict(config)
    elif callable(getattr(config, "to_dict", None)):
        raw = config.to_dict()
    elif hasattr(config, "__dict__"):
        raw = {k: v for k, v in vars(config).items() if not k.startswith("_")}
    else:
        raise ContractError("the config cannot be read", expected="a dataclass, dict, PretrainedConfig or object with attributes", actual=type(config).__name__)
    return json.loads(json.dumps(raw, default=repr, sort_keys=True))


def flatten(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors in ``value`` by stable name: tuple/list items by index, mappings (dicts,
    ModelOutput) by key, nested with "."; a bare tensor is "output"; None entries are skipped."""
    if isinstance(value, torch.Tensor):
        return {prefix or "output": value}
    items: Sequence[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(value)]
    elif value is None:
        return {}
    else:
        raise ContractError(f"the module returned a {type(value).__name__} at {prefix or 'the top level'}",
                            expected="tensors in tuples, lists, dicts or ModelOutputs", actual=type(value).__name__)
    out: dict[str, torch.Tensor] = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def _state_names(name: str, spec: State) -> list[str]:
    return [name] if spec.count is None else [f"{name}.{i}" for i in range(spec.count)]


@dataclass(frozen=True)
class Carried:
    """One tensor memx carries between steps for a memory: the memory itself (``kind``
    "tensor"), or the buffer and validity mask of a growing one ("buffer", "valid")."""

    name: str  # the state's name in the package
    memory: str  # the keyword the module takes it by
    spec: State
    kind: str

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.spec.shape[:1]) if self.kind == "valid" else tuple(self.spec.shape)

    @property
    def dtype(self) -> str:
        return "bool" if self.kind == "valid" else self.spec.dtype


def _carried(memories: dict[str, State]) -> list[Carried]:
    out = []
    for name, spec in memories.items():
        if spec.grows:
            out += [Carried(name, name, spec, "buffer"), Carried(f"{name}.valid", name, spec, "valid")]
        else:
            out += [Carried(sn, name, spec, "tensor") for sn in _state_names(name, spec)]
    return out


class WrappedModel(SegmentModel):
    """A user's module as a memx step (made by :func:`wrap`)."""

    def __init__(self, module: nn.Module, state: dict[str, State], *, vocab_size: int, max_segment_len: int, call: Callable[..., Any] | None,
                 mask: str | None, outputs: dict[str, str] | None, new_state: dict[str, str] | None, causal: bool, name: str, config: Any,
                 factory: str | None, inputs: dict[str, Input] | None = None):
        cfg = WrapConfig(int(vocab_size), int(max_segment_len), f"{type(module).__module__}.{type(module).__qualname__}", config_to_dict(config))
        super().__init__(cfg)
        self.family = f"wrapped:{name}"
        self.inner = module
        self.memories = dict(state)
        self._inputs = [InputSpec(k, tuple(v.shape), v.dtype, tuple(v.range) if v.range is not None else None, v.pad) for k, v in (inputs or {}).items()]
        self._call, self._mask, self._causal, self.factory = call, mask, causal, factory
        self._carried = _carried(self.memories)
        self._init_values(module)
        self._returned_state = {c.name: (new_state or {}).get(c.name, c.name) for c in self._carried if c.kind != "valid"}
        self._outputs_map = outputs
        self._outputs = self._infer_outputs()

    # --- description ---------------------------------------------------------------------------
    def state_names(self) -> list[str]:
        return [c.name for c in self._carried]

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec(c.name, c.dims, c.dtype) for c in self._carried]  # batch moved first; the other axes keep their order

    def output_specs(self) -> list[OutputSpec]:
        return [OutputSpec(name, shape, dtype, axis) for name, (_, shape, dtype, axis, _) in self._outputs.items()]

    def input_specs(self) -> list[InputSpec]:
        return list(self._inputs)

    @property
    def is_causal(self) -> bool:
        return self._causal

    # --- initial states --------------------------------------------------------------------------
    def _init_values(self, module: nn.Module) -> None:
        self._init_names: dict[str, str] = {}
        for c in self._carried:
            sn, spec = c.name, c.spec
            attr = "init_" + sn.replace(".", "_")
            if spec.grows and spec.init != "zeros":
                raise ContractError(f"growing memory {c.memory!r} starts empty", expected="init='zeros'", actual=spec.init)
            if c.kind == "valid":
                continue
            if isinstance(spec.init, str) and spec.init not in ("zeros", "learned"):
                raise ContractError(f"state {sn!r} has an unknown init", expected="'zeros', 'learned', a tensor or a callable", actual=spec.init)
            if spec.init == "zeros":
                continue
            value = spec.init() if callable(spec.init) else spec.init
            if spec.init == "learned":
                self.register_parameter(attr, nn.Parameter(torch.randn(spec.shape) * 0.02))
            else:
                value = torch.as_tensor(value)
                if tuple(value.shape) != tuple(spec.shape):
                    raise ContractError(f"the initial value of state {sn!r} has the wrong shape", expected=list(spec.shape), actual=list(value.shape))
                self.register_buffer(attr, value.clone())
            self._init_names[sn] = attr

    def _initial(self, sn: str, like: torch.Tensor) -> torch.Tensor:
        attr = self._init_names.get(sn)
        if attr is None:
            return torch.zeros_like(like[0])
        return getattr(self, attr).to(like.dtype)

    # --- the step ------------------------------------------------------------------------------
    def _call_module(self, tokens: torch.Tensor, lengths: torch.Tensor, states: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Call the user's module with its own layouts; its results flattened by name."""
        given: dict[str, Any] = dict(extras)
        for name, spec in self.memories.items():
            if spec.grows:
                given[name] = self._to_user(states[name], spec)
                given[spec.mask or f"{name}_mask"] = states[f"{name}.valid"]
                continue
            parts = [self._to_user(states[sn], spec) for sn in _state_names(name, spec)]
            given[name] = parts[0] if spec.count is None else parts
        if self._mask is not None:
            given[self._mask] = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]).to(torch.int64)  # (B, S) 1 = real
        result = self._call(self.inner, tokens, **given) if self._call is not None else self.inner(tokens, **given)
        return flatten(result)

    @staticmethod
    def _append(buffer: torch.Tensor, valid: torch.Tensor, entries: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's real entries appended, the newest ``M`` kept: buffer (B, M, ...),
        valid (B, M) bool, entries (B, S, ...)."""
        slots, seg = buffer.shape[1], entries.shape[1]
        real = torch.arange(seg, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
        joined = torch.cat([buffer, entries.to(buffer.dtype)], dim=1)  # (B, M + S, ...)
        joined_valid = torch.cat([valid, real], dim=1).to(torch.int32)  # (B, M + S); gathered as int32, which every runtime runs
        index = torch.arange(slots, device=lengths.device)[None, :] + lengths[:, None]  # (B, M): the last M of the M + lengths[b] real-or-old
        picked = joined.gather(1, index.reshape(*index.shape, *([1] * (joined.dim() - 2))).expand(-1, -1, *joined.shape[2:]))
        return picked, joined_valid.gather(1, index).to(torch.bool)

    @staticmethod
    def _to_user(state: torch.Tensor, spec: State) -> torch.Tensor:
        return state.movedim(0, spec.batch_axis) if spec.batch_axis else state

    @staticmethod
    def _from_user(value: torch.Tensor, spec: State) -> torch.Tensor:
        t = value.movedim(spec.batch_axis, 0) if spec.batch_axis else value
        return t.to(getattr(torch, spec.dtype))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, reset: torch.Tensor, *rest: torch.Tensor):
        n_in = len(self._inputs)
        extras, state_in = dict(zip((i.name for i in self._inputs), rest[:n_in])), rest[n_in:]
        names = self.state_names()
        current = {}
        for sn, s in zip(names, state_in):
            current[sn] = self.select_initial(reset, self._initial(sn, s), s)
        flat = self._call_module(tokens, lengths, current, extras)
        outputs = []
        for name, (key, _, _, axis, batch_axis) in self._outputs.items():
            t = flat[key]
            if batch_axis:
                t = t.movedim(batch_axis, 0)
            if axis is not None:
                real = torch.arange(t.shape[axis], device=t.device) < lengths[:, None]  # (B, S)
                shape = [t.shape[0]] + [1] * (t.dim() - 1)
                shape[axis] = t.shape[axis]
                t = where(real.reshape(shape), t, torch.zeros((), dtype=t.dtype, device=t.device))
            outputs.append(t)
        new_states = []
        for c in self._carried:
            if c.kind == "valid":
                continue  # made with its buffer
            key = self._returned_state[c.name]
            if key not in flat:
                raise ContractError(f"the module did not return state {c.name!r}", expected=f"an entry {key!r} (or new_state={{{c.name!r}: NAME}})", actual=sorted(flat))
            if c.kind == "buffer":
                buffer, valid = self._append(current[c.name], current[f"{c.name}.valid"], flat[key], lengths)
                new_states += [self.keep_if_empty(lengths, buffer, current[c.name]), self.keep_if_empty(lengths, valid, current[f"{c.name}.valid"])]
                continue
            new = self._from_user(flat[key], c.spec)
            new_states.append(self.keep_if_empty(lengths, new, current[c.name]))
        return (*outputs, *new_states)

    # --- outputs, found by running the module twice -------------------------------------------------
    def _infer_outputs(self) -> dict[str, tuple[str, tuple[int | str, ...], str, int | None, int]]:
        """{output name: (returned key, shape with "batch"/"segment", dtype, segment axis after
        the batch axis moves first, batch axis as returned)} from two calls of other sizes."""
        runs = []
        seg_max = self.max_segment_len
        sizes = [(2, min(3, seg_max)), (3, min(5, seg_max))]
        for batch, seg in sizes:
            gen = torch.Generator().manual_seed(0)
            tokens = torch.randint(0, self.vocab_size, (batch, seg), generator=gen)
            states = {c.name: torch.zeros(batch, *c.dims, dtype=getattr(torch, c.dtype)) for c in self._carried}
            extras = {i.name: i.example(batch, seg, gen) for i in self._inputs}
            with torch.no_grad():
                runs.append(self._call_module(tokens, torch.full((batch,), seg), states, extras))
        first, second = runs
        state_keys = set(self._returned_state.values())
        wanted = self._outputs_map or {k: k for k in first if k not in state_keys}
        unknown = sorted(set(wanted.values()) - set(first))
        if unknown:
            raise ContractError("outputs name entries the module does not return", expected=sorted(first), actual=unknown)
        found = {}
        for name, key in wanted.items():
            a, b = first[key], second[key]
            dims: list[int | str] = []
            batch_axis, seg_axis = None, None
            for axis, (x, y) in enumerate(zip(a.shape, b.shape)):
                if (x, y) == (sizes[0][0], sizes[1][0]) and batch_axis is None:
                    dims.append("batch")
                    batch_axis = axis
                elif (x, y) == (sizes[0][1], sizes[1][1]) and sizes[0][1] != sizes[1][1] and seg_axis is None:
                    dims.append("segment")
                    seg_axis = axis
                elif x == y:
                    dims.append(int(x))
                else:
                    raise ContractError(f"output {key!r} has an axis that follows neither batch nor segment", expected="fixed, batch or segment sizes",
                                        actual=f"{list(a.shape)} at B={sizes[0][0]}, S={sizes[0][1]}; {list(b.shape)} at B={sizes[1][0]}, S={sizes[1][1]}")
            if batch_axis is None or a.dim() != b.dim():
                raise ContractError(f"output {key!r} has no batch axis", expected="one axis of size B", actual=list(a.shape))
            dims.insert(0, dims.pop(batch_axis))
            if seg_axis is not None and seg_axis < batch_axis:
                seg_axis += 1  # the batch axis moved in front of it
            found[name] = (key, tuple(dims), str(a.dtype).removeprefix("torch."), seg_axis, batch_axis)
        return found


def wrap(module: nn.Module, *, state: dict[str, State], vocab_size: int, max_segment_len: int, call: Callable[..., Any] | None = None,
         mask: str | None = None, outputs: dict[str, str] | Sequence[str] | None = None, new_state: dict[str, str] | None = None,
         causal: bool = False, name: str | None = None, config: Any = None, factory: str | None = None,
         inputs: dict[str, Input] | None = None) -> WrappedModel:
    """``module`` as an exportable memx step.

    state: the memories by the keyword the module takes them as; call: ``call(module, tokens,
    **states, [mask])`` when the module is not called as ``module(tokens, **states)``; mask: the
    keyword of the module's padding mask (int64 (B, S), 1 = real token), made from ``lengths``;
    outputs: which returned entries are outputs ({output name: returned name} or names; default:
    all that are not states); new_state: {state: returned name} where they differ; causal: no
    output depends on later tokens; name: the family name ("wrapped:NAME"); config: recorded in
    the manifest (any kind); factory: "package.module:function" that rebuilds this wrapper from
    the manifest's config, recorded so ``memx validate --trust-reference`` can find it;
    inputs: extra step inputs ({keyword: memx.Input(shape, ...)}), passed to the module by keyword.
    """
    if not isinstance(module, nn.Module):
        raise ContractError("memx.wrap takes a torch module", expected="an nn.Module", actual=type(module).__name__)
    if not state:
        raise ContractError("memx.wrap needs the module's memory", expected="state={'memory': memx.State(shape)}", actual=state)
    for key, spec in state.items():
        if not isinstance(spec, State):
            raise ContractError(f"state {key!r} is not a memx.State", expected="memx.State(shape, ...)", actual=type(spec).__name__)
        if not 0 <= spec.batch_axis <= len(spec.shape):
            raise ContractError(f"state {key!r} has its batch axis outside its dims", expected=f"0..{len(spec.shape)}", actual=spec.batch_axis)
        if spec.grows and (spec.batch_axis or spec.count is not None or not spec.shape):
            raise ContractError(f"growing memory {key!r} must be (slots, ...) with the batch axis first and no count",
                                expected="memx.State((slots, d), grows=True)", actual=spec)
    for key, spec in (inputs or {}).items():
        if not isinstance(spec, Input):
            raise ContractError(f"input {key!r} is not a memx.Input", expected="memx.Input(shape, ...)", actual=type(spec).__name__)
        if key in state or key == mask:
            raise ContractError(f"input {key!r} is also a state or the mask", expected="distinct keywords", actual=key)
    if outputs is not None and not isinstance(outputs, Mapping):
        outputs = {o: o for o in outputs}
    return WrappedModel(module, state, vocab_size=vocab_size, max_segment_len=max_segment_len, call=call, mask=mask,
                        outputs=dict(outputs) if outputs is not None else None, new_state=new_state, causal=causal,
                        name=name or type(module).__name__.lower(), config=config, factory=factory, inputs=inputs).eval()
