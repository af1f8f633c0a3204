"""Triton model repositories for a memx package, and their checks.

    write_repository(pkg, "repo", RepositoryOptions(name="rmt", backend="python", max_batch=64))

writes ``repo/rmt/config.pbtxt`` and ``repo/rmt/1/...``, by backend:

- ``python``: ``1/{model.py, package/}``, a Python-backend model with ``sequence_batching``
  (START/END/READY/CORRID controls) that runs memx's own runtime on a copy of the package, a
  stream per sequence kept by memx, batched across live sequences. Serves every package.
- ``onnxruntime``: ``1/{model.onnx, memx.json}``, the serving graph (``serving_graph``) with
  Triton's implicit state: one ``state`` entry per memx state, paired by name
  (``state_in.X``/``state_out.X``), zero initial data, START mapped onto ``reset``.
- ``tensorrt``: the same config with ``1/{serving.onnx, memx.json}`` and ``1/model.plan``,
  built from the serving graph by full TensorRT on the server's GPU (``plan.build_plan``,
  ``memx serve plan``): plans are bound to a GPU and a TensorRT version.

The repository is read back and checked against the package before it replaces anything.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memx.errors import RepositoryError
from memx.package import Package
from memx.package.files import staged_directory
from memx.package.manifest import MANIFEST_FILE, Manifest, StateInfo
from memx.serving import pbtxt, serving_graph
from memx.serving.pbtxt import Enum

STRATEGIES = ("oldest", "direct")
BACKENDS = ("python", "onnxruntime", "tensorrt")
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")  # Triton runs the serving graph and keeps the state
SERVING_GRAPH_FILE = {"onnxruntime": "model.onnx", "tensorrt": "serving.onnx"}
PLAN_FILE = "model.plan"
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
MODEL_PY = '''"""Written by memx (memx serve repo): Triton runs this memx package with memx's runtime.
memx must be importable in the Python backend's environment: `memx serve up` puts the
launching Python's packages (MEMX_SERVING_PATH) after the server environment's own."""
import os
import sys

for _path in os.environ.get("MEMX_SERVING_PATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)

from memx.serving.triton_model import TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class RepositoryOptions:
    name: str
    backend: str = "python"
    max_batch: int = 64
    strategy: str = "oldest"
    instances: int = 1
    idle_timeout_s: float = 60.0
    queue_delay_us: int = 0  # the sequence batcher runs what is queued (requests queue while the model runs); > 0 waits for more
    max_candidates: int = 256
    snapshot_store: str | None = None  # python: a directory on the server (relative: to the model's directory): sequences survive restarts
    snapshot_ttl_s: float | None = None  # python, with a store: stored sequences untouched this long are removed (None: kept until their END)
    op_library: str | None = None  # onnxruntime: libmemx_ops.so's path on the server (model_operations); else the ops' model-local bodies run


def triton_dims(shape: list[Any]) -> list[int]:
    """A manifest shape without its batch axis, symbolic dims as -1; one value per row is
    dims [1] (Triton wants a dim; ``reshape`` drops it, see :func:`tensor_config`)."""
    return [d if isinstance(d, int) else -1 for d in shape[1:]] or [1]


def tensor_config(name: str, dtype: str, shape: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "data_type": Enum(TRITON_TYPES[dtype]), "dims": triton_dims(shape)}
    if len(shape) == 1:  # [batch]: the model sees one value per row
        out["reshape"] = {"shape": []}
    return out


def control_inputs() -> list[dict[str, Any]]:
    kinds = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "READY": "CONTROL_SEQUENCE_READY"}
    out = [{"name": name, "control": [{"kind": Enum(kind), "int32_false_true": [0, 1]}]} for name, kind in kinds.items()]
    return out + [{"name": "CORRID", "control": [{"kind": Enum("CONTROL_SEQUENCE_CORRID"), "data_type": Enum("TYPE_UINT64")}]}]


def rows_dims(shape: list[Any]) -> list[int]:
    """Dims of a python-backend tensor: a request carries a sequence's R rows, so the manifest's
    batch axis becomes a variable rows axis (Triton's own batch axis, 1 per request, comes first)."""
    return [-1, *(d if isinstance(d, int) else -1 for d in shape[1:])]


def sequence_batching(opt: RepositoryOptions, controls: list[dict[str, Any]]) -> dict[str, Any]:
    """The sequence batcher's settings: idle timeout, strategy, the control inputs."""
    strategy = {"max_candidate_sequences": opt.max_candidates, "preferred_batch_size": [opt.max_batch], "max_queue_delay_microseconds": opt.queue_delay_us} \
        if opt.strategy == "oldest" else {"max_queue_delay_microseconds": opt.queue_delay_us}
    return {"max_sequence_idle_microseconds": int(opt.idle_timeout_s * 1e6), opt.strategy: strategy, "control_input": controls}


def python_config(pkg: Package, opt: RepositoryOptions) -> dict[str, Any]:
    m = pkg.manifest
    inputs = [{"name": "TOKENS", "data_type": Enum("TYPE_INT64"), "dims": [-1, -1]}]  # [R, S]: the sequence's rows
    # optional for Triton so that commands (snapshot, restore, end) need none; a step without
    # them is refused by memx, typed, like a local one
    inputs += [{"name": "LENGTHS", "data_type": Enum("TYPE_INT64"), "dims": [-1], "optional": True},
               {"name": "RESET", "data_type": Enum("TYPE_BOOL"), "dims": [-1], "optional": True}]
    inputs += [{"name": i.name, "data_type": Enum(TRITON_TYPES[i.dtype]), "dims": rows_dims(i.shape), "optional": True} for i in m.inputs]
    inputs += [{"name": n, "data_type": Enum("TYPE_STRING"), "dims": [1], "optional": True} for n in ("MEMX_COMMAND", "MEMX_SNAPSHOT")]
    outputs = [{"name": o.name, "data_type": Enum(TRITON_TYPES[o.dtype]), "dims": rows_dims(o.shape)} for o in m.outputs]
    outputs += [{"name": "MEMX_SNAPSHOT", "data_type": Enum("TYPE_STRING"), "dims": [1]}]
    return {
        "name": opt.name,
        "backend": "python",
        "max_batch_size": opt.max_batch,
        "input": inputs,
        "output": outputs,
        "sequence_batching": sequence_batching(opt, control_inputs()),
        "instance_group": [{"count": opt.instances, "kind": Enum("KIND_CPU")}],
        "parameters": [{"key": k, "value": {"string_value": v}} for k, v in
                       {"memx_package": "package", "memx_idle_timeout_s": repr(opt.idle_timeout_s), "memx_model_id": m.model_id(),
                        "memx_max_segment": str(m.segment["max"]),  # what a client's shared-memory region is sized for
                        **({"memx_snapshot_store": opt.snapshot_store} if opt.snapshot_store else {}),
                        **({"memx_snapshot_ttl_s": repr(float(opt.snapshot_ttl_s))} if opt.snapshot_ttl_s is not None else {})}.items()],
    }


def state_config(s: StateInfo) -> dict[str, Any]:
    """Triton's implicit state for one memx state: paired by the manifest's names (never by
    order), dims without the batch axis, zero initial data (START makes the graph read the
    learned initial memory instead, through ``reset``)."""
    dims = [int(d) for d in s.shape[1:]]
    dtype = Enum(TRITON_TYPES[s.dtype])
    return {"input_name": s.input, "output_name": s.output, "data_type": dtype, "dims": dims,
            "initial_state": {"data_type": dtype, "dims": dims, "zero_data": True, "name": f"{s.name}.zero"}}


def graph_config(pkg: Package, opt: RepositoryOptions) -> dict[str, Any]:
    """config.pbtxt of an onnxruntime or tensorrt model running the serving graph."""
    m = pkg.manifest
    serving_graph.single_graph(m)
    for s in m.state:
        if len(s.shape) < 2 or not all(isinstance(d, int) for d in s.shape[1:]):
            raise RepositoryError(f"state {s.name!r} has no fixed dims after the batch axis, which Triton's implicit state needs",
                                  expected="[batch, fixed dims...]", actual=s.shape, hint="serve it with --backend python")
    inputs = [{"name": serving_graph.TOKENS, "data_type": Enum("TYPE_INT64"), "dims": [-1]},
              tensor_config(serving_graph.LENGTHS, "int64", ["batch"])]  # dims [1], reshaped to one value per row
    inputs += [tensor_config(i.name, i.dtype, i.shape) for i in m.inputs]
    start = {"name": serving_graph.START, "control": [{"kind": Enum("CONTROL_SEQUENCE_START"), "bool_false_true": [False, True]}]}
    config: dict[str, Any] = {
        "name": opt.name,
        "backend": opt.backend,
        "max_batch_size": opt.max_batch,
        "default_model_filename": PLAN_FILE if opt.backend == "tensorrt" else SERVING_GRAPH_FILE["onnxruntime"],
        "input": inputs,
        "output": [tensor_config(o.name, o.dtype, o.shape) for o in m.outputs],
        "sequence_batching": {**sequence_batching(opt, [start]), "state": [state_config(s) for s in m.state]},
        # tensorrt runs on a GPU; onnxruntime's kind is left to Triton (GPU when there is one)
        "instance_group": [{"count": opt.instances, **({"kind": Enum("KIND_GPU")} if opt.backend == "tensorrt" else {})}],
        "parameters": [{"key": "memx_model_id", "value": {"string_value": m.model_id()}}],
    }
    if opt.op_library:
        config["model_operations"] = {"op_library_filename": [opt.op_library]}
    return config


def check_options(opt: RepositoryOptions) -> None:
    if opt.backend not in BACKENDS:
        raise RepositoryError("memx cannot write a repository for this Triton backend", expected=list(BACKENDS), actual=opt.backend,
                              hint="the python backend serves every package")
    if opt.strategy not in STRATEGIES:
        raise RepositoryError("unknown sequence batching strategy", expected=list(STRATEGIES), actual=opt.strategy)
    if not opt.name or not all(c.isalnum() or c in "-_." for c in opt.name) or opt.name.startswith("."):
        raise RepositoryError("a Triton model name must be a plain directory name", expected="letters, digits, - _ .", actual=opt.name)
    for field, value, low in (("max_batch", opt.max_batch, 1), ("instances", opt.instances, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RepositoryError(f"{field} must be a positive integer", expected=f">= {low}", actual=value)
    if isinstance(opt.queue_delay_us, bool) or not isinstance(opt.queue_delay_us, int) or opt.queue_delay_us < 0:
        raise RepositoryError("the queue delay must be a whole number of microseconds", expected=">= 0", actual=opt.queue_delay_us)
    if not opt.idle_timeout_s > 0:
        raise RepositoryError("the idle timeout must be positive", expected="> 0 seconds", actual=opt.idle_timeout_s)
    if opt.snapshot_store and opt.backend != "python":
        raise RepositoryError("a snapshot store needs the python backend (Triton's implicit state cannot be saved to disk)", expected="--backend python",
                              actual=opt.backend)
    if opt.snapshot_ttl_s is not None and (not opt.snapshot_store or not opt.snapshot_ttl_s > 0):
        raise RepositoryError("a snapshot TTL needs a snapshot store and a positive number of seconds", expected="--snapshot-store DIR --snapshot-ttl S (S > 0)",
                              actual=f"store {opt.snapshot_store!r}, ttl {opt.snapshot_ttl_s!r}")
    if opt.op_library is not None and (opt.backend != "onnxruntime" or not Path(opt.op_library).is_absolute()):
        raise RepositoryError("the kernel library is loaded by the onnxruntime backend from an absolute path on the server",
                              expected="--backend onnxruntime and an absolute path", actual=f"--backend {opt.backend}, {opt.op_library}")


def write_repository(pkg: Package | str | Path, out: str | Path, opt: RepositoryOptions, *, force: bool = False) -> Path:
    """Write (atomically) a Triton model repository serving ``pkg`` as model ``opt.name``;
    returns the repository directory."""
    pkg = pkg if isinstance(pkg, Package) else Package.open(pkg)
    check_options(opt)
    config = python_config(pkg, opt) if opt.backend == "python" else graph_config(pkg, opt)
    with staged_directory(out, force=force) as staging:
        model_dir = staging / opt.name
        version = model_dir / "1"
        version.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(pbtxt.dumps(config))
        if opt.backend == "python":
            (version / "model.py").write_text(MODEL_PY)
            shutil.copytree(pkg.path, version / "package")
        else:
            _write_serving_graph(pkg, version / SERVING_GRAPH_FILE[opt.backend])
            shutil.copyfile(pkg.path / MANIFEST_FILE, version / MANIFEST_FILE)
        check_repository(staging, opt.name)
    return Path(out)


def _write_serving_graph(pkg: Package, path: Path) -> None:
    import onnx

    model = serving_graph.serving_model(pkg)
    large = model.ByteSize() > 1_800_000_000  # protobuf's 2 GiB limit: weights go beside the graph
    onnx.save(model, str(path), save_as_external_data=large, location=f"{path.name}.data" if large else None)


def pending_plan(repo: str | Path, name: str) -> bool:
    """True for a tensorrt model whose plan is still to be built (``memx serve plan``)."""
    model_dir = Path(repo) / name
    return (model_dir / "1" / SERVING_GRAPH_FILE["tensorrt"]).is_file() and not (model_dir / "1" / PLAN_FILE).is_file()


def _one(message: dict[str, Any], key: str) -> Any:
    values = message.get(key, [])
    if len(values) != 1:
        raise RepositoryError(f"config.pbtxt field {key} must appear once", expected=1, actual=len(values))
    return values[0]


def check_repository(repo: str | Path, name: str) -> dict[str, Any]:
    """Read ``repo/name`` back and check it against the package it serves: every memx input and
    output present with its type and dims, the sequence controls, and (graph backends) every
    state entry paired by name with the manifest's dims and the serving graph's tensors."""
    model_dir = Path(repo) / name
    config = pbtxt.loads((model_dir / "config.pbtxt").read_text())
    if _one(config, "name") != name:
        raise RepositoryError("config.pbtxt names another model than its directory", expected=name, actual=_one(config, "name"))
    backend = _one(config, "backend")
    if backend not in BACKENDS:
        raise RepositoryError("config.pbtxt names a backend memx does not write", expected=list(BACKENDS), actual=backend)
    if backend == "python":
        m = Package.open(model_dir / "1" / "package").manifest
    else:
        m = Manifest.from_bytes((model_dir / "1" / MANIFEST_FILE).read_bytes(), source=str(model_dir / "1" / MANIFEST_FILE))
    dims = rows_dims if backend == "python" else triton_dims  # python: a request carries its sequence's rows
    want_in = {serving_graph.TOKENS: ("TYPE_INT64", [-1, -1] if backend == "python" else [-1]), serving_graph.LENGTHS: ("TYPE_INT64", [-1] if backend == "python" else [1]),
               **{i.name: (TRITON_TYPES[i.dtype], dims(i.shape)) for i in m.inputs}}
    want_out = {o.name: (TRITON_TYPES[o.dtype], dims(o.shape)) for o in m.outputs}
    for section, want in (("input", want_in), ("output", want_out)):
        got = {_one(t, "name"): (_one(t, "data_type").word, t.get("dims", [])) for t in config.get(section, [])}
        for tensor, (dtype, dims) in want.items():
            if got.get(tensor) != (dtype, dims):
                raise RepositoryError(f"config.pbtxt {section} {tensor!r} does not match the package", expected=f"{dtype} {dims}", actual=got.get(tensor, "absent"))
    seq = _one(config, "sequence_batching")
    controls = {_one(c, "name"): _one(_one(c, "control"), "kind").word for c in seq.get("control_input", [])}
    want_controls = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"} \
        if backend == "python" else {serving_graph.START: "CONTROL_SEQUENCE_START"}
    if controls != want_controls:
        raise RepositoryError("config.pbtxt sequence controls are not memx's", expected=want_controls, actual=controls)
    params = {_one(p, "key"): _one(_one(p, "value"), "string_value") for p in config.get("parameters", [])}
    if params.get("memx_model_id") != m.model_id():
        raise RepositoryError("the repository's package is another model than its config names", expected=params.get("memx_model_id", "")[:16], actual=m.model_id()[:16])
    if backend != "python":
        _check_graph_model(model_dir, backend, seq, m)
    return config


def _check_graph_model(model_dir: Path, backend: str, seq: dict[str, Any], m: Manifest) -> None:
    """START is a bool control, every state entry pairs the manifest's names with its dims and a
    zero initial state, and the serving graph has the tensors the config names."""
    import onnx

    start = _one(_one(seq, "control_input"), "control")
    if start.get("bool_false_true") != [False, True]:
        raise RepositoryError("START must reach the graph as a bool (it becomes memx's reset input)", expected="bool_false_true: [false, true]",
                              actual={k: v for k, v in start.items() if k != "kind"})
    entries = {_one(e, "input_name"): e for e in seq.get("state", [])}
    if sorted(entries) != sorted(s.input for s in m.state) or len(seq.get("state", [])) != len(m.state):
        raise RepositoryError("config.pbtxt state entries are not the package's states", expected=sorted(s.input for s in m.state),
                              actual=[_one(e, "input_name") for e in seq.get("state", [])])
    for s in m.state:
        e = entries[s.input]
        dims = [int(d) for d in s.shape[1:]]
        if _one(e, "output_name") != s.output:
            raise RepositoryError(f"config.pbtxt pairs state input {s.input!r} with another state's output", expected=s.output, actual=_one(e, "output_name"),
                                  hint="Triton carries output_name into input_name: a wrong pair swaps memories between states")
        got = (_one(e, "data_type").word, e.get("dims", []))
        if got != (TRITON_TYPES[s.dtype], dims):
            raise RepositoryError(f"config.pbtxt state {s.name!r} does not match the package", expected=f"{TRITON_TYPES[s.dtype]} {dims}", actual=f"{got[0]} {got[1]}")
        init = _one(e, "initial_state")
        if init.get("zero_data") != [True] or init.get("dims", []) != dims:
            raise RepositoryError(f"config.pbtxt state {s.name!r} needs zero initial data of its dims (else the first request reads what is there)",
                                  expected=f"zero_data, dims {dims}", actual={k: v for k, v in init.items() if k in ("zero_data", "dims", "data_file")})
    graph_file = model_dir / "1" / SERVING_GRAPH_FILE[backend]
    serving_graph.check_serving_model(onnx.load(str(graph_file), load_external_data=False), m)
