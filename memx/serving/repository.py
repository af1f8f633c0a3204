"""Triton model repositories for a memx package, and their checks.

    write_repository(pkg, "repo", name="rmt", backend="python", max_batch=64)

writes ``repo/rmt/config.pbtxt`` and ``repo/rmt/1/{model.py, package/}``: a Python-backend
model with ``sequence_batching`` (START/END/READY/CORRID control inputs) that runs memx's own
runtime on a copy of the package, a stream per sequence, batched across live sequences. The
repository is read back and checked against the package before it replaces anything.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memx.errors import RepositoryError
from memx.package import Package
from memx.package.files import staged_directory
from memx.serving import pbtxt
from memx.serving.pbtxt import Enum

STRATEGIES = ("oldest", "direct")
BACKENDS = ("python",)
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
    queue_delay_us: int = 500
    max_candidates: int = 256
    snapshot_store: str | None = None  # a directory on the server (relative: to the model's directory): sequences survive restarts


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


def python_config(pkg: Package, opt: RepositoryOptions) -> dict[str, Any]:
    m = pkg.manifest
    inputs = [{"name": "TOKENS", "data_type": Enum("TYPE_INT64"), "dims": [-1]}]
    # optional for Triton so that commands (snapshot, restore, end) need none; a step without
    # them is refused by memx, typed, like a local one
    inputs += [{**tensor_config(i.name, i.dtype, i.shape), "optional": True} for i in m.inputs]
    inputs += [{"name": n, "data_type": Enum("TYPE_STRING"), "dims": [1], "optional": True} for n in ("MEMX_COMMAND", "MEMX_SNAPSHOT")]
    outputs = [tensor_config(o.name, o.dtype, o.shape) for o in m.outputs]
    outputs += [{"name": "MEMX_SNAPSHOT", "data_type": Enum("TYPE_STRING"), "dims": [1]}]
    strategy = {"max_candidate_sequences": opt.max_candidates, "preferred_batch_size": [opt.max_batch], "max_queue_delay_microseconds": opt.queue_delay_us} \
        if opt.strategy == "oldest" else {"max_queue_delay_microseconds": opt.queue_delay_us}
    return {
        "name": opt.name,
        "backend": "python",
        "max_batch_size": opt.max_batch,
        "input": inputs,
        "output": outputs,
        "sequence_batching": {"max_sequence_idle_microseconds": int(opt.idle_timeout_s * 1e6), opt.strategy: strategy, "control_input": control_inputs()},
        "instance_group": [{"count": opt.instances, "kind": Enum("KIND_CPU")}],
        "parameters": [{"key": k, "value": {"string_value": v}} for k, v in
                       {"memx_package": "package", "memx_idle_timeout_s": repr(opt.idle_timeout_s), "memx_model_id": m.model_id(),
                        **({"memx_snapshot_store": opt.snapshot_store} if opt.snapshot_store else {})}.items()],
    }


def check_options(opt: RepositoryOptions) -> None:
    if opt.backend not in BACKENDS:
        raise RepositoryError("memx cannot write a repository for this Triton backend yet", expected=list(BACKENDS), actual=opt.backend,
                              hint="the python backend serves every package")
    if opt.strategy not in STRATEGIES:
        raise RepositoryError("unknown sequence batching strategy", expected=list(STRATEGIES), actual=opt.strategy)
    if not opt.name or not all(c.isalnum() or c in "-_." for c in opt.name) or opt.name.startswith("."):
        raise RepositoryError("a Triton model name must be a plain directory name", expected="letters, digits, - _ .", actual=opt.name)
    for field, value, low in (("max_batch", opt.max_batch, 1), ("instances", opt.instances, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RepositoryError(f"{field} must be a positive integer", expected=f">= {low}", actual=value)
    if not opt.idle_timeout_s > 0:
        raise RepositoryError("the idle timeout must be positive", expected="> 0 seconds", actual=opt.idle_timeout_s)


def write_repository(pkg: Package | str | Path, out: str | Path, opt: RepositoryOptions, *, force: bool = False) -> Path:
    """Write (atomically) a Triton model repository serving ``pkg`` as model ``opt.name``;
    returns the repository directory."""
    pkg = pkg if isinstance(pkg, Package) else Package.open(pkg)
    check_options(opt)
    config = python_config(pkg, opt)
    with staged_directory(out, force=force) as staging:
        model_dir = staging / opt.name
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(pbtxt.dumps(config))
        (model_dir / "1" / "model.py").write_text(MODEL_PY)
        shutil.copytree(pkg.path, model_dir / "1" / "package")
        check_repository(staging, opt.name)
    return Path(out)


def _one(message: dict[str, Any], key: str) -> Any:
    values = message.get(key, [])
    if len(values) != 1:
        raise RepositoryError(f"config.pbtxt field {key} must appear once", expected=1, actual=len(values))
    return values[0]


def check_repository(repo: str | Path, name: str) -> dict[str, Any]:
    """Read ``repo/name`` back and check it against the package inside it: every memx input
    and output present with its type and dims, the four sequence controls, the package intact."""
    model_dir = Path(repo) / name
    config = pbtxt.loads((model_dir / "config.pbtxt").read_text())
    if _one(config, "name") != name:
        raise RepositoryError("config.pbtxt names another model than its directory", expected=name, actual=_one(config, "name"))
    pkg = Package.open(model_dir / "1" / "package")
    m = pkg.manifest
    want_in = {"TOKENS": ("TYPE_INT64", [-1]), **{i.name: (TRITON_TYPES[i.dtype], triton_dims(i.shape)) for i in m.inputs}}
    want_out = {o.name: (TRITON_TYPES[o.dtype], triton_dims(o.shape)) for o in m.outputs}
    for section, want in (("input", want_in), ("output", want_out)):
        got = {_one(t, "name"): (_one(t, "data_type").word, t.get("dims", [])) for t in config.get(section, [])}
        for tensor, (dtype, dims) in want.items():
            if got.get(tensor) != (dtype, dims):
                raise RepositoryError(f"config.pbtxt {section} {tensor!r} does not match the package", expected=f"{dtype} {dims}", actual=got.get(tensor, "absent"))
    seq = _one(config, "sequence_batching")
    controls = {_one(c, "name"): _one(_one(c, "control"), "kind").word for c in seq.get("control_input", [])}
    want_controls = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    if controls != want_controls:
        raise RepositoryError("config.pbtxt sequence controls are not memx's", expected=want_controls, actual=controls)
    params = {_one(p, "key"): _one(_one(p, "value"), "string_value") for p in config.get("parameters", [])}
    if params.get("memx_model_id") != m.model_id():
        raise RepositoryError("the repository's package is another model than its config names", expected=params.get("memx_model_id", "")[:16], actual=m.model_id()[:16])
    return config
