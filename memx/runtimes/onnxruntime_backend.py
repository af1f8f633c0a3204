"""ONNX Runtime backend. Execution providers and their options pass through, so the
CUDA and TensorRT providers work wherever the installed onnxruntime has them."""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import numpy as np

from memx.errors import BackendUnavailableError, InputError, PackageFileError
from memx.package.manifest import GraphInfo
from memx.package.files import Package
from memx.runtimes.base import Backend, check_graph_dtypes, check_graph_dtypes_of, register_backend
from memx.runtimes.resident import Binding, OrtDevice

log = logging.getLogger("memx.runtimes.onnxruntime")

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """Options: ``providers`` (list of names or (name, options) pairs), ``intra_op_threads``,
    ``inter_op_threads``, ``graph_optimization`` ("all", "extended", "basic", "disable"),
    ``session_options`` (an ``onnxruntime.SessionOptions`` used as is), ``custom_op_library``
    (None: libmemx_ops when the package uses memx ops and the library is built; False: never,
    run the ops' reference bodies; a path: that library), ``graph_passes`` (memx's rewrites into
    ONNX Runtime's fused CPU kernels, memx.runtimes.onnxruntime_passes: "none" (default: the
    graph as written; opening a package then imports neither onnx nor onnxruntime.transformers,
    and every runtime, C++ included, computes the same values); "auto": all of them (default_passes()) when the
    session runs on the CPU provider alone and graph optimization is "all" or "extended"; True:
    all, on any provider; or a list / comma-separated names, on any provider). The package's
    file is never changed: the rewritten graph lives in memory. ``cpu_build`` (the graphs `memx
    build --backend onnxruntime` wrote into the package, memx.json ``onnxruntime_cpu``): "auto"
    (default) runs them where the session runs on the CPU provider alone, and the graphs as
    exported elsewhere or when this onnxruntime refuses them; True: always (an error when the
    package has none or onnxruntime refuses them); False: never. ``flush_denormals``
    (default False): ONNX Runtime's ``session.set_denormal_as_zero``; masked attention on the
    CPU makes denormal probabilities (ONNX Runtime's exp stops at about -104, not at 0), which
    multiply up to 2x slower on x86; flushing them to zero changes results by less than 1e-38
    per term. ONNX Runtime sets it on its worker threads and, for the first session a process
    creates only, on the thread creating it (and keeps it there)."""

    def __init__(self, package: Package, *, device: str = "cpu", **options: Any):
        super().__init__(package, device=device, **options)
        import onnxruntime as ort

        providers = options.get("providers") or _DEVICE_PROVIDERS.get(device)
        if providers is None:
            raise BackendUnavailableError("unknown device for onnxruntime", expected=f"one of {sorted(_DEVICE_PROVIDERS)}", actual=device)
        available = ort.get_available_providers()
        wanted = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
        if wanted[0] not in available:
            raise BackendUnavailableError(
                f"execution provider for device {device!r} is not in this onnxruntime build", expected=wanted[0], actual=f"available providers {available}",
                hint="install onnxruntime-gpu (pip install 'memx-toolkit[gpu]') for CUDA/TensorRT",
            )
        so = options.get("session_options") or self._session_options(ort, options)
        self.custom_op_kernels = self._register_custom_ops(so, package, options.get("custom_op_library"))
        usable = [p for p in providers if (p[0] if isinstance(p, (tuple, list)) else p) in available]
        self.graph_passes = _pass_names(options.get("graph_passes", "none"), usable, options.get("graph_optimization", "all"))
        self.cpu_build = _cpu_build_choice(options.get("cpu_build", "auto"), package, usable)
        self.passes_applied: dict[str, dict[str, int]] = {}
        self.graph_files: dict[str, str] = {}  # graph name -> the package file its session runs
        self.cpu_build_refused: dict[str, str] = {}  # graph name -> why onnxruntime could not load its CPU build
        self._sessions = {g.name: self._session(ort, package, g, so, usable) for g in package.manifest.graphs}
        check_graph_dtypes(package.manifest, {name: _session_dtypes(sess) for name, sess in self._sessions.items()})
        self._runs = {g.name: (self._sessions[g.name], [o.name for o in g.outputs]) for g in package.manifest.graphs}
        self._lazy = (ort, so, usable)  # decode graphs get their sessions on first use

    def _extra_session(self, graph: GraphInfo) -> tuple[Any, list[str]]:
        """A session for a graph outside the step (the decode graphs), made once on first use."""
        decode = self.package.manifest.decode
        if decode is None or graph.name not in {g.name for g in decode.graphs}:
            raise BackendUnavailableError(f"graph {graph.name!r} is not a graph of this package", expected=[g.name for g in self.package.manifest.graphs], actual=graph.name)
        ort, so, providers = self._lazy
        sess = self._session(ort, self.package, graph, so, providers)
        check_graph_dtypes_of(graph, _session_dtypes(sess))
        self._runs[graph.name] = (sess, [o.name for o in graph.outputs])
        return self._runs[graph.name]

    def _session(self, ort: Any, package: Package, graph: GraphInfo, so: Any, providers: list[Any]) -> Any:
        """An InferenceSession of one graph (rewritten by the graph passes in memory when there
        are any; the graph as written when ONNX Runtime refuses the rewrite, e.g. a fused kernel
        its CPU provider has only for float32); a graph ONNX Runtime refuses (not ONNX, invalid,
        an op it has no kernel for, types that do not agree) is a PackageFileError naming the file."""
        built = self._built_session(ort, package, graph, so, providers)
        if built is not None:
            return built
        path = package.file(graph.file)
        self.graph_files[graph.name] = graph.file
        if self.graph_passes:
            rewritten = rewritten_graph(path, package.manifest.files.get(graph.file), tuple(self.graph_passes))
            if rewritten is not None:
                try:
                    sess = ort.InferenceSession(rewritten[0], sess_options=so, providers=providers)
                    self.passes_applied[graph.name] = rewritten[1]
                    return sess
                except Exception as e:
                    log.info("graph %r runs without memx's graph passes: onnxruntime refused the rewrite (%s)", graph.name, _ort_text(e))
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime's own types (InvalidGraph, Fail, InvalidArgument, ...) and RuntimeError
            if type(e).__name__ == "EPFail":  # the provider, not the graph
                raise BackendUnavailableError(f"execution provider failed to load graph {graph.name!r} ({graph.file})", expected=f"providers {providers}",
                                              actual=_ort_text(e)) from None
            raise PackageFileError(f"package file {graph.file!r} is a graph onnxruntime {ort.__version__} cannot load", expected="a valid ONNX graph",
                                   actual=_ort_text(e)) from None

    def _built_session(self, ort: Any, package: Package, graph: GraphInfo, so: Any, providers: list[Any]) -> Any | None:
        """A session of the graph `memx build --backend onnxruntime` wrote for ``graph``, when
        this backend runs builds and the package has one for it; None: run the graph as exported."""
        file = (package.manifest.onnxruntime_cpu or {}).get("graphs", {}).get(graph.name) if self.cpu_build else None
        if file is None:
            return None
        try:
            sess = ort.InferenceSession(str(package.file(file)), sess_options=so, providers=providers)
        except Exception as e:  # an onnxruntime without one of the fused kernels, or a file it cannot load
            if self.cpu_build is True:
                raise BackendUnavailableError(f"onnxruntime {ort.__version__} cannot load the CPU build of graph {graph.name!r} ({file})",
                                              expected="a graph this onnxruntime loads", actual=_ort_text(e),
                                              hint=f"rebuild it with this onnxruntime (`memx build {package.path} --backend onnxruntime`) or open with cpu_build=False") from None
            log.warning("graph %r runs as exported: onnxruntime %s cannot load its CPU build %s (%s)", graph.name, ort.__version__, file, _ort_text(e))
            self.cpu_build_refused[graph.name] = _ort_text(e)
            return None
        self.graph_files[graph.name] = file
        self.passes_applied[graph.name] = dict(package.manifest.onnxruntime_cpu.get("passes", {}).get(graph.name, {}))
        if self.passes_applied[graph.name].get("int8-matmul"):
            from memx.runtimes.cpu_features import uses_vpmaddubsw

            if uses_vpmaddubsw():
                log.warning("graph %r: its CPU build multiplies u8 x s8, which this x86 CPU without VNNI does with saturating int16 sums; "
                            "rebuild here (memx build %s --backend onnxruntime takes int8-matmul-u8u8 on such a CPU)", graph.name, package.path)
        return sess

    @staticmethod
    def _register_custom_ops(so: Any, package: Package, choice: Any) -> str:
        """Register the memx kernel library when the package uses memx ops; returns what runs them."""
        if not package.manifest.custom_ops:
            return "none used"
        if choice is False:
            return "reference body (kernel library disabled)"
        from memx.ops.library import find_library, library_status

        path = find_library() if choice in (None, True) else Path(choice)
        if path is None or not path.is_file():
            if choice not in (None, True):
                raise BackendUnavailableError("custom-op library not found", expected="an existing libmemx_ops.so", actual=str(choice))
            if choice is True:
                raise BackendUnavailableError("custom-op library requested but not available", expected="libmemx_ops.so", actual=library_status()[1])
            log.debug("memx ops run their reference bodies: %s", library_status()[1])
            return "reference body (no kernel library)"
        try:
            so.register_custom_ops_library(str(path))
        except Exception as e:  # not a shared library, or one built against another onnxruntime
            raise BackendUnavailableError("custom-op library cannot be loaded", expected=f"a libmemx_ops built for this onnxruntime at {path}", actual=_ort_text(e)) from None
        log.debug("memx ops run the kernels of %s", path)
        return f"kernel ({path.name})"

    @staticmethod
    def _session_options(ort: Any, options: dict[str, Any]) -> Any:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if options.get("intra_op_threads"):
            so.intra_op_num_threads = int(options["intra_op_threads"])
        if options.get("inter_op_threads"):
            so.inter_op_num_threads = int(options["inter_op_threads"])
        if options.get("flush_denormals"):
            so.add_session_config_entry("session.set_denormal_as_zero", "1")
        level = options.get("graph_optimization", "all")
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[level]
        return so

    def run(self, graph: GraphInfo, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess, names = self._runs.get(graph.name) or self._extra_session(graph)
        return dict(zip(names, sess.run(names, feeds)))

    def resident(self) -> tuple["OrtIoBindingExecutor", OrtDevice]:
        """State on the device of this backend's providers (CUDA memory for cuda/tensorrt)."""
        kind = "cpu" if self.device == "cpu" else "cuda"
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        return OrtIoBindingExecutor(self._sessions, self.package.manifest.graphs), OrtDevice(kind, index, providers=self._check_providers())

    def _check_providers(self) -> list[Any]:
        """The providers of the sessions, for the device-side finiteness check (TensorRT EP: CUDA is enough)."""
        used = next(iter(self._sessions.values())).get_providers()
        return [p for p in used if p != "TensorrtExecutionProvider"] or ["CPUExecutionProvider"]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        sess = next(iter(self._sessions.values()))
        return {"backend": self.name, "device": self.device, "providers": sess.get_providers(), "onnxruntime": ort.__version__,
                "custom_ops": self.custom_op_kernels, "graph_passes": self.passes_applied, "graph_files": dict(self.graph_files),
                "cpu_build_refused": dict(self.cpu_build_refused)}


def _pass_names(choice: Any, providers: list[Any], level: str) -> list[str]:
    """The graph passes a session gets (see OnnxRuntimeBackend's ``graph_passes``); "none"
    imports nothing (the passes need onnx)."""
    if choice is None or choice is False or choice in ("none", ""):
        return []
    from memx.runtimes.onnxruntime_passes import PASSES, default_passes

    if choice == "auto":
        cpu_only = [p[0] if isinstance(p, (tuple, list)) else p for p in providers] == ["CPUExecutionProvider"]
        return default_passes() if cpu_only and level in ("all", "extended") else []
    if choice is True:
        return default_passes()
    if not isinstance(choice, (str, list, tuple)):
        raise InputError("graph_passes is not a choice of passes", expected="'none', 'auto', True/False, or pass names", actual=repr(choice))
    names = [n.strip() for n in choice.split(",")] if isinstance(choice, str) else list(choice)
    for n in names:
        PASSES.get(n)  # an unknown name is a typed error naming the registered passes
    return names


def _cpu_build_choice(choice: Any, package: Package, providers: list[Any]) -> bool | str:
    """Whether sessions run the package's CPU build (see OnnxRuntimeBackend's ``cpu_build``):
    True (must), "auto" (where it applies) or False."""
    if choice in ("auto", None):
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
        return "auto" if names == ["CPUExecutionProvider"] and package.manifest.onnxruntime_cpu is not None else False
    if choice is False or choice == "off":
        return False
    if choice is True or choice == "on":
        if package.manifest.onnxruntime_cpu is None:
            raise BackendUnavailableError("the package has no ONNX Runtime CPU build", expected="memx.json onnxruntime_cpu",
                                          actual="none", hint=f"run `memx build {package.path} --backend onnxruntime`")
        return True
    raise InputError("cpu_build is not a choice", expected="'auto', True or False", actual=repr(choice))


_REWRITTEN: "collections.OrderedDict[tuple[str, str, tuple[str, ...]], tuple[bytes, dict[str, int]] | None]" = collections.OrderedDict()
_REWRITTEN_BYTES = 256 * 2**20  # the rewritten graphs kept for reopening, in all


def rewritten_graph(path: Path, info: Any, passes: tuple[str, ...]) -> tuple[bytes, dict[str, int]] | None:
    """The graph at ``path`` after ``passes``, serialized, and what each pass rewrote; None when
    no pass changed anything or the graph keeps its weights in external files (ONNX Runtime
    then reads the file itself). The last graphs rewritten (up to 256 MiB of them, keyed by path,
    the manifest's sha256, the file's size and time, and the passes) are kept, so reopening a
    package does not rewrite it again."""
    import onnx

    from memx.runtimes.onnxruntime_passes import run_passes

    stat = path.stat()
    key = (str(path), f"{info.sha256 if info is not None else ''}:{stat.st_size}:{stat.st_mtime_ns}", passes)
    if key in _REWRITTEN:
        _REWRITTEN.move_to_end(key)
        return _REWRITTEN[key]
    model = onnx.load(str(path), load_external_data=False)
    done: dict[str, int] = {}
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        done = run_passes(model, passes)
    result = (model.SerializeToString(), done) if any(done.values()) else None
    _REWRITTEN[key] = result
    while sum(len(v[0]) for v in _REWRITTEN.values() if v is not None) > _REWRITTEN_BYTES or len(_REWRITTEN) > 64:
        _REWRITTEN.popitem(last=False)
    log.debug("graph passes on %s: %s", path.name, done)
    return result


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _session_dtypes(sess: Any) -> dict[str, str]:
    """tensor name -> dtype of a session's inputs and outputs, as memx.json spells dtypes."""
    return {a.name: _ORT_TYPES.get(a.type, a.type) for a in (*sess.get_inputs(), *sess.get_outputs())}


def _ort_text(e: Exception) -> str:
    """onnxruntime's error as one line: its type and the message without the "[ONNXRuntimeError] : N : KIND :" head."""
    text = " ".join(str(e).split())
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return f"{type(e).__name__}: {text[:300]}"


class OrtIoBindingExecutor:
    """Runs each graph with ``run_with_iobinding`` on preallocated OrtValues: outputs (new states
    included) are written where they live, nothing is copied to the host. One IoBinding per graph
    and buffer set, reused while the buffers are (two sets per shape: one per parity)."""

    name = "onnxruntime"

    def __init__(self, sessions: dict[str, Any], graphs: list[GraphInfo]):
        self.sessions, self.graphs = sessions, list(graphs)
        self._cache: dict[tuple[int, ...], tuple[list[Any], list[Any]]] = {}  # buffer ids -> (bindings, buffers kept alive)
        self._current: list[Any] = []

    def bind(self, binding: Binding, stream_handle: int) -> None:
        buffers = [binding.inputs[t.name] for g in self.graphs for t in g.inputs] + [binding.outputs[t.name] for g in self.graphs for t in g.outputs]
        key = tuple(id(b) for b in buffers)
        if key not in self._cache:
            if len(self._cache) >= 2:  # a new shape: the other buffer sets are gone
                self._cache = {}
            self._cache[key] = (self._make(binding), buffers)
        self._current = self._cache[key][0]

    def _make(self, binding: Binding) -> list[Any]:
        made = []
        for g in self.graphs:
            io = self.sessions[g.name].io_binding()
            for t in g.inputs:
                io.bind_ortvalue_input(t.name, binding.inputs[t.name])
            for t in g.outputs:
                io.bind_ortvalue_output(t.name, binding.outputs[t.name])
            made.append(io)
        return made

    def launch(self, stream_handle: int) -> None:
        for g, io in zip(self.graphs, self._current):
            self.sessions[g.name].run_with_iobinding(io)
