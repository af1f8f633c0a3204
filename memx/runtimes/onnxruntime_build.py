"""`memx build --backend onnxruntime`: the package's step graphs rewritten ahead of time into
ONNX Runtime's fused CPU kernels (memx.runtimes.onnxruntime_passes), written into the package.

    build_cpu("pkg.memx")                       # onnxruntime-cpu/GRAPH-HASH.onnx + memx.json onnxruntime_cpu
    runtimes.open("pkg.memx")                   # on the CPU provider alone: runs them (cpu_build="auto")

What the in-memory ``graph_passes`` do at every open, done once: opening a built package then
imports neither onnx nor onnxruntime.transformers, and every runtime that reads the manifest
(the C++ one included) runs the same graphs, so they compute the same values. The graphs as
exported stay in the package for every other runtime (TensorRT, ONNX Runtime's CUDA and
TensorRT providers, torch).

Nothing is written unless every rewritten graph loads in this onnxruntime and the ``check``
accepts them (memx build: the rewritten graphs and ONNX Runtime's own run of the graphs as
exported, each against the graphs' literal meaning over many segments,
memx.validation.drift.CpuBuildCheck); the files are written each atomically under names new
to the package and memx.json is replaced last, so a failed or interrupted build leaves the
package as it was (at most an unlisted file behind, after a crash).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from memx.errors import InputError, PackageFileError, UnsafePathError
from memx.package.files import MANIFEST_FILE, Package, dir_mode, file_info, safe_join, update_manifest, write_bytes_atomic
from memx.package.manifest import CPU_BUILD_DIR, Manifest

log = logging.getLogger("memx.runtimes.onnxruntime")
BUILD_DIR = CPU_BUILD_DIR


@dataclass
class CpuGraph:
    """One graph rewritten for the CPU provider."""

    graph: str  # the package's graph name
    file: str  # onnxruntime-cpu/GRAPH-<sha256 prefix>.onnx inside the package
    model: bytes  # the serialized rewritten graph
    passes: dict[str, int]  # what each pass rewrote


def package_graphs(pkg: Package) -> list[Any]:
    """The graphs a build covers: the step's. (The decode graphs of memx generate run as
    exported: the build's check steps streams and would not see them.)"""
    return list(pkg.manifest.graphs)


def build_file(graph: str, model: bytes) -> str:
    """onnxruntime-cpu/NAME-HASH.onnx for a graph: NAME is the graph name with anything but
    letters, digits, '_' and '-' replaced (graph names come from the manifest), HASH the
    content's, so a rebuild never overwrites a file the manifest lists."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", graph)[:64] or "graph"
    return f"{BUILD_DIR}/{safe}-{hashlib.sha256(model).hexdigest()[:12]}.onnx"


def rewrite_for_cpu(pkg: Package, passes: list[str] | None = None) -> tuple[list[CpuGraph], tuple[str, ...]]:
    """Every step graph of ``pkg`` that one of ``passes`` (default: default_passes(), every pass
    with the int8 MatMul form this CPU wants) changes, rewritten in memory and loaded once by
    onnxruntime's CPU provider to prove it runs, and the passes, in the order they ran. Graphs
    no pass changes are left out (runtimes run those as exported)."""
    import onnxruntime as ort

    from memx.runtimes.onnxruntime_backend import _ort_text, rewritten_graph
    from memx.runtimes.onnxruntime_passes import PASSES, default_passes

    names = tuple(passes) if passes else tuple(default_passes())
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
        out.append(CpuGraph(g.name, build_file(g.name, rewritten[0]), rewritten[0], rewritten[1]))
    return out, names


def open_for_build(package: str | os.PathLike | Package) -> Package:
    """The package, every file checked except those of its CPU build: a build whose files were
    deleted or damaged can still be replaced or removed."""
    if isinstance(package, Package):
        return package
    root = Path(package)
    try:
        return Package.open(root)
    except PackageFileError:
        manifest = Manifest.from_bytes((root / MANIFEST_FILE).read_bytes(), source=str(root / MANIFEST_FILE))
        built = set((manifest.onnxruntime_cpu or {}).get("graphs", {}).values())
        if not built:
            raise
        rest = dataclasses.replace(manifest, files={k: v for k, v in manifest.files.items() if k not in built}, onnxruntime_cpu=None)
        Package(root, rest).check_files(verify=True)  # everything else as Package.open checks it
        log.warning("the CPU build of %s is damaged or missing; it is replaced or removed", root)
        return Package(root, manifest, verified=True)


def build_cpu(package: str | os.PathLike | Package, *, passes: list[str] | None = None,
              check: Callable[[Package, tuple[str, ...]], dict[str, Any]] | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rewrite the step graphs of ``package`` for ONNX Runtime's CPU provider and record them in
    the package (replacing an earlier CPU build); returns memx.json's new ``onnxruntime_cpu``.
    ``check(pkg, passes)`` runs before anything is written: it returns what to record of it, or
    raises to refuse the build. A package no pass changes is an InputError (nothing written)."""
    import onnxruntime as ort

    pkg = open_for_build(package)
    if progress:
        progress(f"rewriting the graphs of {pkg.path.name} for onnxruntime {ort.__version__} (CPU)")
    graphs, used = rewrite_for_cpu(pkg, passes)
    if not graphs:
        raise InputError(f"no graph of {pkg.path.name} has anything memx's ONNX Runtime passes rewrite (or onnxruntime refuses every rewrite)",
                         expected="attention, tanh-GELU or Q/DQ MatMul patterns in float32 graphs", actual=f"precision {pkg.manifest.precision}",
                         hint="the package runs as exported: there is nothing to build")
    record = None
    if check is not None:
        if progress:
            progress(f"checking {', '.join(g.graph for g in graphs)} against the graphs as exported")
        record = check(pkg, used)
    entry = {"graphs": {g.graph: g.file for g in graphs}, "onnxruntime": ort.__version__, "passes": {g.graph: g.passes for g in graphs},
             **({"check": record} if record is not None else {})}
    commit_cpu_build(pkg, graphs, entry)
    return entry


def _build_dir(pkg: Package) -> Path:
    """onnxruntime-cpu/ inside the package: a real directory (a link could lead out of it)."""
    target = pkg.path / BUILD_DIR
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UnsafePathError(f"{BUILD_DIR} in the package is not a directory", expected=f"a directory {target}", actual="a link or a file")
    return target


def commit_cpu_build(pkg: Package, graphs: list[CpuGraph], entry: dict[str, Any] | None) -> None:
    """Write the graphs (each atomically, under names new to the package), then memx.json; the
    files of the earlier CPU build go after that, and only they. A failure before memx.json
    is replaced takes the new files away again. ``entry`` None with no graphs: remove the build."""
    target_dir = _build_dir(pkg)
    old = set((pkg.manifest.onnxruntime_cpu or {}).get("graphs", {}).values())
    files = {k: v for k, v in pkg.manifest.files.items() if k not in old}
    written: list[Path] = []
    try:
        if graphs:
            target_dir.mkdir(exist_ok=True, mode=dir_mode())
        for g in graphs:
            target = safe_join(pkg.path, g.file)
            if g.file not in pkg.manifest.files:
                written.append(target)
            write_bytes_atomic(target, g.model)
            files[g.file] = file_info(target)
        update_manifest(pkg, dataclasses.replace(pkg.manifest, files=files, onnxruntime_cpu=entry))
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    for rel in old - set(files):
        with contextlib.suppress(OSError, UnsafePathError):
            safe_join(pkg.path, rel).unlink()
    if not graphs and target_dir.is_dir() and not any(target_dir.iterdir()):
        target_dir.rmdir()


def remove_cpu_build(package: str | os.PathLike | Package) -> bool:
    """Take the CPU build out of a package (memx.json first, then its files); False if it had none."""
    pkg = open_for_build(package)
    if pkg.manifest.onnxruntime_cpu is None:
        return False
    commit_cpu_build(pkg, [], None)
    return True
