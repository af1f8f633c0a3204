"""Packages exported once per test run, shared by every test, every pytest-xdist worker and
the C++ phase of `make test`.

Each entry is keyed by its content: what is made (preset, seed, export or quantization
options) and the code version (a hash over memx's sources and checkpoints, with the
versions of torch, onnx, onnxscript and onnxruntime). Workers take a file lock per entry, so
one exports and the others wait and reuse. An entry left by an earlier run is reused only
after its files match the hashes in its manifest (a test that altered a shared package would
otherwise poison later runs); entries of other code versions are removed.

    python -m tests.package_cache rmt-tiny      # prints the path of the cached package
    python -m tests.package_cache tests.models.byo_models:make_seq2seq   # a user model, by its factory
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "MEMX_TEST_CACHE"
_SOURCE_SUFFIXES = {".py", ".json", ".safetensors", ".cc", ".h"}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or ROOT / "build" / "test-cache")


@lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of everything an exported package depends on."""
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    h = hashlib.sha256()
    for lib in (torch, onnx, onnxscript, onnxruntime):
        h.update(f"{lib.__name__}={lib.__version__};".encode())
    h.update(f"python={sys.version_info[:3]};".encode())
    src = ROOT / "memx"
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(src)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def entry_key(kind: str, **fields: Any) -> str:
    """A readable, unique directory name for one cached thing."""
    canonical = json.dumps(fields, sort_keys=True, default=str)
    readable = "-".join(str(fields[k]) for k in ("name", "method", "state") if k in fields)
    return f"{kind}-{readable}-{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prune_other_versions(root: Path, keep: str) -> None:
    """Remove cache folders of other code versions (only the folders this module made)."""
    with _locked(root / ".prune.lock"):
        for child in root.iterdir() if root.is_dir() else []:
            if child.is_dir() and child.name.startswith("v-") and child.name != keep:
                shutil.rmtree(child, ignore_errors=True)


_pruned: set[str] = set()
_opened: dict[str, Any] = {}  # key -> Package, per process


def cached(key: str, make: Callable[[Path], Any]):
    """The package at ``<cache>/v-<code>/<key>``: ``make(path)`` creates it when absent.

    Returns a ``memx.exporter.Package``. ``make`` must write the package atomically (memx's
    export and quantize both stage and rename), so a killed run leaves no half entry.
    """
    from memx.errors import MemxError
    from memx.exporter import Package

    if key in _opened:
        return _opened[key]
    version = f"v-{code_version()}"
    root = cache_root()
    if version not in _pruned:
        root.mkdir(parents=True, exist_ok=True)
        _prune_other_versions(root, version)
        _pruned.add(version)
    path = root / version / key
    with _locked(root / version / f"{key}.lock"):
        if path.is_dir():
            try:
                _opened[key] = Package.open(path, verify=True)
                return _opened[key]
            except MemxError:  # altered by a test of an earlier run: make it again
                shutil.rmtree(path)
        make(path)
        _opened[key] = Package.open(path)
        return _opened[key]


def exported(name: str, **options: Any):
    """An exported preset or zoo model (seed 0, no export-time parity: tests check parity)."""
    from memx.exporter import export_preset

    options.setdefault("verify_segments", 0)
    key = entry_key("export", name=name, **options)
    return cached(key, lambda path: export_preset(name, path, **options))


def quantized(name: str, method: str, state: str = "fp32", **kwargs: Any):
    """A quantized zoo package, made from the cached fp32 export."""
    from memx.calibration import quantize_package

    source = exported(name)
    options: dict[str, Any] = dict(method=method, state_precision=state, calib_segments=48)
    options.update(kwargs)
    key = entry_key("quantize", name=name, state=state, source=source.path.name, **options)
    return cached(key, lambda path: quantize_package(source, path, progress=False, **options))


def exported_factory(path: str):
    """A user model exported through its factory ("tests.models.byo_models:make_seq2seq")."""
    from memx.exporter.to_onnx import export_factory

    key = entry_key("factory", name=path.replace(":", "-").replace(".", "-"))
    return cached(key, lambda out: export_factory(path, out, verify_segments=0))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.package_cache PRESET | module:factory", file=sys.stderr)
        return 2
    print((exported_factory(argv[0]) if ":" in argv[0] else exported(argv[0])).path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
