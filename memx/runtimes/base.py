"""Runtime / Stream / StreamPool (DESIGN.md §5) over any registered backend.

A backend only runs a graph on a dict of arrays. Everything the contract
promises lives here, once, for every backend: input validation, the
reset-on-first-step rule, transactional steps (state replaced only after a
successful, finite step), snapshots, and batching many streams into one call.

Threading: a Runtime may be shared by threads (backends serialise or are
thread-safe in their run call); a Stream or StreamPool belongs to one thread.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from memx.errors import BackendRunError, BackendUnavailableError, InputError, InternalError, ManifestError, MemxError, StateError
from memx.registry import Registry
from memx.package.manifest import GraphInfo, Manifest
from memx.package.files import Package
from memx.package import snapshot as snap
from memx.runtimes.pool import StreamPool
from memx.runtimes.resident import DeviceSlots, ResidentStream
from memx.runtimes.stream import Stream
from memx.runtimes.inputs import check_count, non_finite_state_error


class Backend(ABC):
    """Runs one graph of a package: feeds in, named outputs out (numpy on the host)."""

    name: ClassVar[str] = ""

    def __init__(self, package: Package, *, device: str = "cpu", **options: Any):
        self.package = package
        self.device = device
        self.options = options

    @abstractmethod
    def run(self, graph: GraphInfo, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``graph`` and return every graph output by name."""

    def describe(self) -> dict[str, Any]:
        """What actually runs (providers, device, threads) for reports and logs."""
        return {"backend": self.name, "device": self.device}

    def resident(self) -> tuple[Any, Any] | None:
        """(executor, device) for streams whose state stays on the device (resident.py), or
        None when this backend only runs on host arrays."""
        return None


_BACKENDS: Registry[type[Backend] | str] = Registry("backend")  # a class, or the module that registers it on import


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def wrap(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        lazy = name in _BACKENDS and isinstance(_BACKENDS.get(name), str)
        _BACKENDS.add(name, cls, replace=lazy)  # a lazy entry becomes its class; a second class is refused
        return cls

    return wrap


def register_lazy_backend(name: str, module: str) -> None:
    """Register a backend whose module (and library) is imported on first use."""
    if name not in _BACKENDS:
        _BACKENDS.add(name, module)


def backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> type[Backend]:
    entry = _BACKENDS.get(name)
    if isinstance(entry, str):
        try:
            importlib.import_module(entry)
        except ImportError as e:
            raise BackendUnavailableError(f"backend {name!r} cannot be imported: {e}", hint="install its library (e.g. pip install torch)") from None
        entry = _BACKENDS.get(name)
        if isinstance(entry, str):
            raise InternalError(f"module {entry} did not register backend {name!r}")
    return entry


@dataclass(frozen=True)
class StepPlan:
    """Everything a host step needs from the manifest, computed once per Runtime: the state
    schema, graph input names per graph, output names, and (state, graph input, graph output)."""

    schema: dict[str, tuple[tuple[int, ...], str]]
    graph_inputs: list[tuple[GraphInfo, list[str]]]
    output_names: list[str]
    state_io: list[tuple[str, str, str]]
    float_states: tuple[str, ...]
    _shapes: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict, compare=False)  # per batch

    @classmethod
    def of(cls, manifest: Manifest) -> "StepPlan":
        _check_state_dtypes(manifest)
        schema = snap.state_schema(manifest)
        return cls(
            schema=schema,
            graph_inputs=[(g, [t.name for t in g.inputs]) for g in manifest.graphs],
            output_names=[o.name for o in manifest.outputs],
            state_io=[(s.name, s.input, s.output) for s in manifest.state],
            float_states=tuple(n for n, (_, dtype) in schema.items() if np.dtype(dtype).kind == "f"),
        )

    def check_state(self, new_state: Mapping[str, np.ndarray], *, batch: int) -> None:
        """Shapes as the schema says and finite floats; raises StateError / NonFiniteStateError."""
        shapes = self._shapes.get(batch)
        if shapes is None:
            shapes = self._shapes[batch] = {name: (batch, *shape) for name, (shape, _) in self.schema.items()}
        for name, arr in new_state.items():
            if arr.shape != shapes[name]:
                raise StateError(f"backend returned state {name!r} with the wrong shape", expected=list(shapes[name]), actual=list(arr.shape))
            if arr.dtype != self.schema[name][1]:  # a backend must not change what a snapshot of the state holds
                raise StateError(f"backend returned state {name!r} with the wrong dtype", expected=self.schema[name][1], actual=str(arr.dtype))
        if not self.float_states:
            return
        # one reduction for all float states: a NaN or Inf anywhere makes the sum of squares
        # non-finite; only then (or on a finite overflow) is each state checked exactly
        if math.isfinite(sum(float(np.vdot(new_state[n], new_state[n])) for n in self.float_states)):
            return
        for name in self.float_states:
            arr = new_state[name]
            if not np.isfinite(arr).all():
                raise non_finite_state_error(name, arr)


def _check_state_dtypes(manifest: Manifest) -> None:
    """Each state's dtype must be the one its graph input takes and its graph output gives, as
    memx.json declares them: the state is fed as the state dtype says (every backend refuses
    the same package with the same error, before any step)."""
    for s in manifest.state:
        for g in manifest.graphs:
            for kind, tensors, name in (("input", g.inputs, s.input), ("output", g.outputs, s.output)):
                for t in tensors:
                    if t.name == name and t.dtype != s.dtype:
                        raise ManifestError(f"state {s.name!r} has another dtype than graph {g.name!r} {kind} {t.name!r} in memx.json", expected=t.dtype, actual=s.dtype,
                                            hint="the manifest was edited after export: re-export the package")


def check_graph_dtypes(manifest: Manifest, taken: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse a package whose memx.json declares a graph tensor with another dtype than the graph,
    as a backend loaded it, takes or gives (``taken``: graph name -> tensor name -> dtype; names
    a backend does not know are not checked). Every backend raises this same error at open."""
    for g in manifest.graphs:
        check_graph_dtypes_of(g, taken.get(g.name, {}))


def check_graph_dtypes_of(g: GraphInfo, known: Mapping[str, str]) -> None:
    """One graph's tensors against the dtypes a backend loaded (see check_graph_dtypes)."""
    for kind, tensors in (("input", g.inputs), ("output", g.outputs)):
        for t in tensors:
            actual = known.get(t.name)
            if actual is not None and actual != t.dtype:
                raise ManifestError(f"graph {g.name!r} {kind} {t.name!r} has another dtype than memx.json declares", expected=t.dtype, actual=actual,
                                    hint="the manifest or the graph was edited after export: re-export the package")


@dataclass
class StreamState:
    """What a stream owns: its state tensors (batch axis 0) and which rows start fresh."""

    states: dict[str, np.ndarray]
    pending_reset: np.ndarray  # bool (B,): row starts a new stream at its next step
    segments: int = 0

    @property
    def batch(self) -> int:
        return int(self.pending_reset.shape[0])


class Runtime:
    """An opened package with one backend. Create streams and pools from it."""

    def __init__(self, package: Package, backend: Backend, *, resident: bool | None = None, cuda_graphs: bool = False):
        self.package = package
        self.backend = backend
        self.resident = resident  # None: device-resident streams on every device but the CPU
        self.cuda_graphs = cuda_graphs
        self.graphs = list(package.manifest.graphs)  # run in this order each step
        self._model_id = package.manifest.model_id()
        self._plan = StepPlan.of(package.manifest)
        # called as observer(graph, feeds) before each graph runs (calibration records feeds this way)
        self.graph_observer: Callable[[GraphInfo, dict[str, np.ndarray]], None] | None = None

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def state_schema(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return self._plan.schema

    def fresh_state(self, batch: int) -> StreamState:
        """Zero state with every row marked for reset: the graph substitutes the learned initial state."""
        zeros = {name: np.zeros((batch, *shape), dtype=dtype) for name, (shape, dtype) in self.state_schema.items()}
        return StreamState(zeros, np.ones(batch, dtype=bool))

    def stream(self, batch_size: int = 1, *, resident: bool | None = None, cuda_graphs: bool | None = None) -> "Stream | ResidentStream":
        """A stream of ``batch_size`` rows. ``resident`` (default: the Runtime's; None = on every
        device but the CPU) keeps the state in device buffers between steps (ResidentStream, same
        API); ``cuda_graphs`` replays each step as a captured CUDA graph (resident, CUDA only)."""
        batch_size = check_count(batch_size, "batch_size")
        resident = self.resident if resident is None else resident
        cuda_graphs = self.cuda_graphs if cuda_graphs is None else cuda_graphs
        if resident is None:
            resident = self.backend.device != "cpu" or cuda_graphs
        if not resident:
            if cuda_graphs:
                raise InputError("CUDA graphs need a device-resident stream", expected="resident=True (or None)", actual="resident=False")
            return Stream(self, batch_size)
        parts = self.backend.resident()
        if parts is None:
            raise BackendUnavailableError(f"the {self.backend.name} backend has no device-resident streams", expected="resident=False", actual="resident=True")
        executor, device = parts
        return ResidentStream(self.package, executor, device, batch_size, cuda_graphs=cuda_graphs)

    def pool(self, max_batch: int = 64, *, resident: bool | None = None) -> StreamPool:
        """Many streams stepped in batched calls of at most ``max_batch`` rows. ``resident``
        (default: the Runtime's; None = on every device but the CPU) keeps each stream's
        state in rows of device buffers (DeviceSlots) instead of host arrays."""
        max_batch = check_count(max_batch, "max_batch")
        resident = self.resident if resident is None else resident
        if resident is None:
            resident = self.backend.device != "cpu"
        if not resident:
            return StreamPool(self, max_batch)
        parts = self.backend.resident()
        if parts is None:
            raise BackendUnavailableError(f"the {self.backend.name} backend has no device-resident pools", expected="resident=False", actual="resident=True")
        executor, device = parts
        return StreamPool(self, max_batch, DeviceSlots(self.package, executor, device))

    def run_step(self, tokens: np.ndarray, lengths: np.ndarray, reset: np.ndarray, state: Mapping[str, np.ndarray],
                 extras: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One validated call of the step graph (``extras``: the manifest's extra inputs, checked
        by the caller): returns (outputs, new states); touches nothing."""
        plan = self._plan
        values: dict[str, np.ndarray] = {"tokens": tokens, "lengths": lengths, "reset": reset, **(extras or {})}
        for name, graph_input, _ in plan.state_io:
            arr = values[graph_input] = np.ascontiguousarray(state[name])
            if arr.dtype != plan.schema[name][1]:  # ONNX Runtime would refuse it, torch would cast it: every backend refuses it here
                raise StateError(f"state {name!r} has the wrong dtype", expected=plan.schema[name][1], actual=str(arr.dtype))
        for graph, input_names in plan.graph_inputs:  # a later graph may consume an earlier one's outputs
            feeds = {n: values[n] for n in input_names}
            if self.graph_observer is not None:
                self.graph_observer(graph, feeds)
            values.update(self.run_graph(graph, feeds))
        outputs = {n: values[n] for n in plan.output_names}
        new_state = {name: values[graph_output] for name, _, graph_output in plan.state_io}
        plan.check_state(new_state, batch=tokens.shape[0])
        return outputs, new_state

    def run_graph(self, graph: GraphInfo, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One graph on the backend (a step graph or a decode graph); the backend library's own
        errors become BackendRunError (memx errors pass through); touches nothing."""
        try:
            return self.backend.run(graph, feeds)
        except MemxError:
            raise
        except Exception as e:  # backend libraries raise their own types; the stream stays untouched
            raise BackendRunError(f"{self.backend.name} failed to run graph {graph.name!r}: {type(e).__name__}: {e}") from e

    def generator(self) -> Any:
        """The decode engine of this Runtime (memx.runtimes.generation), made on first use; a
        BackendUnavailableError when the package has no decode graphs."""
        gen = getattr(self, "_generator", None)
        if gen is None:
            from memx.runtimes.generation import Generator

            gen = self._generator = Generator(self)
        return gen

    def snapshot_of(self, st: StreamState) -> bytes:
        return snap.encode(snap.SnapshotData(self.model_id, st.states, st.pending_reset, st.segments))

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "package": str(self.package.path), "family": self.manifest.family, "precision": self.manifest.precision,
                "verified": "sha256" if self.package.verified else "sizes only"}
