"""`memx build --backend onnxruntime`: the package's graphs rewritten ahead of time into ONNX
Runtime's fused CPU kernels (memx.runtimes.onnxruntime_passes), written into the package.

    build_cpu("pkg.memx")                       # onnxruntime-cpu/GRAPH-HASH.onnx + memx.json onnxruntime_cpu
    runtimes.open("pkg.memx")                   # on the CPU provider alone: runs them (cpu_build="auto")

What the in-memory ``graph_passes`` do at every open, done once: opening a built package then
imports neither onnx nor onnxruntime.transformers, and every runtime that reads the manifest
(the C++ one included) runs the same graphs, so they compute the same values. The graphs as
exported stay in the package for every other runtime (TensorRT, ONNX Runtime's CUDA and
TensorRT providers, torch).

Nothing is written unless every rewritten graph loads in this onnxruntime and the ``check``
(memx build: the package with the rewrites against itself without them, over many segments,
memx.validation.drift) accepts them; the files are written each atomically and memx.json is
replaced last, so a failed or interrupted build leaves the package as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from memx.errors import InputError
from memx.package.files import Package, file_info, file_mode, update_manifest

log = logging.getLogger("memx.runtimes.onnxruntime")
BUILD_DIR = "onnxruntime-cpu"


@dataclass
class CpuGraph:
    """One graph rewritten for the CPU provider."""

    graph: str  # the package's graph name
    file: str  # onnxruntime-cpu/GRAPH-<sha256 prefix>.onnx inside the package
    model: bytes  # the serialized rewritten graph
    passes: dict[str, int]  # what each pass rewrote


def package_graphs(pkg: Package) -> list[Any]:
    """The graphs a build covers: the step's and the decode graphs (memx generate)."""
    m = pkg.manifest
    return [*m.graphs, *(m.decode.graphs if m.decode is not None else [])]


def rewrite_for_cpu(pkg: Package, passes: list[str] | None = None) -> list[CpuGraph]:
    """Every graph of ``pkg`` that one of ``passes`` (default: all registered) changes, rewritten
    in memory and loaded once by onnxruntime's CPU provider to prove it runs. Graphs no pass
    changes are left out (runtimes run those as exported)."""
    import onnxruntime as ort

    from memx.runtimes.onnxruntime_backend import _ort_text, rewritten_graph
    from memx.runtimes.onnxruntime_passes import PASSES

    names = tuple(passes) if passes else tuple(PASSES.names())
    for n in names:
        PASSES.get(n)  # an unknown name is a typed error naming the registered passes
    so = ort.SessionOptions()
    so.log_severity_level = 3
    out = []
    for g in package_graphs(pkg):
        rewritten = rewritten_graph(pkg.file(g.file), pkg.manifest.files.get(g.file), names)
        if rewritten is None:
            log.info("graph %r: no pass rewrites anything; it runs as exported", g.name)
            continue
        try:
            ort.InferenceSession(rewritten[0], sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # e.g. an fp16 graph: the fused CPU kernels are float32
            log.info("graph %r runs as exported: onnxruntime %s refuses its rewrite (%s)", g.name, ort.__version__, _ort_text(e))
            continue
        digest = hashlib.sha256(rewritten[0]).hexdigest()[:12]  # a new name per content: the files listed now stay as they are until memx.json moves on
        out.append(CpuGraph(g.name, f"{BUILD_DIR}/{g.name}-{digest}.onnx", rewritten[0], rewritten[1]))
    return out


def build_cpu(package: str | os.PathLike | Package, *, passes: list[str] | None = None,
              check: Callable[[Package, tuple[str, ...]], dict[str, Any]] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rewrite the graphs of ``package`` for ONNX Runtime's CPU provider and record them in the
    package (replacing an earlier CPU build); returns memx.json's new ``onnxruntime_cpu``.
    ``check(pkg, passes)`` runs before anything is written: it returns what to record of it, or
    raises to refuse the build. A package no pass changes is an InputError (nothing written)."""
    import onnxruntime as ort

    pkg = package if isinstance(package, Package) else Package.open(package)
    if progress:
        progress(f"rewriting the graphs of {pkg.path.name} for onnxruntime {ort.__version__} (CPU)")
    graphs = rewrite_for_cpu(pkg, passes)
    if not graphs:
        raise InputError(f"no graph of {pkg.path.name} has anything memx's ONNX Runtime passes rewrite (or onnxruntime refuses every rewrite)",
                         expected="attention, tanh-GELU or Q/DQ MatMul patterns in float32 graphs", actual=f"precision {pkg.manifest.precision}",
                         hint="the package runs as exported: there is nothing to build")
    used = tuple(passes) if passes else tuple(sorted({p for g in graphs for p in g.passes}))
    record = None
    if check is not None:
        if progress:
            progress(f"checking {', '.join(g.graph for g in graphs)} against the graphs as exported")
        record = check(pkg, used)
    entry = {"graphs": {g.graph: g.file for g in graphs}, "onnxruntime": ort.__version__, "passes": {g.graph: g.passes for g in graphs},
             **({"check": record} if record is not None else {})}
    commit_cpu_build(pkg, graphs, entry)
    return entry


def commit_cpu_build(pkg: Package, graphs: list[CpuGraph], entry: dict[str, Any] | None) -> None:
    """Write the graphs (each atomically, under names new to the package), then memx.json; the
    files of an earlier CPU build go after that. ``entry`` None with no graphs: remove the build."""
    target_dir = pkg.path / BUILD_DIR
    files = {k: v for k, v in pkg.manifest.files.items() if not k.startswith(f"{BUILD_DIR}/")}
    if graphs:
        target_dir.mkdir(exist_ok=True)
    for g in graphs:
        target = pkg.path / g.file
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(g.model)
            os.chmod(tmp, file_mode())  # mkstemp makes it owner-only; the umask says who else may read it
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        files[g.file] = file_info(target)
    old = {k for k in pkg.manifest.files if k.startswith(f"{BUILD_DIR}/")} - set(files)
    update_manifest(pkg, dataclasses.replace(pkg.manifest, files=files, onnxruntime_cpu=entry))
    for rel in old:
        (pkg.path / rel).unlink(missing_ok=True)
    if not graphs and target_dir.is_dir() and not any(target_dir.iterdir()):
        target_dir.rmdir()


def remove_cpu_build(package: str | os.PathLike | Package) -> bool:
    """Take the CPU build out of a package (memx.json first, then its files); False if it had none."""
    pkg = package if isinstance(package, Package) else Package.open(package)
    if pkg.manifest.onnxruntime_cpu is None:
        return False
    commit_cpu_build(pkg, [], None)
    return True

