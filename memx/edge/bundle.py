"""`memx bundle`: one directory (or .tar.gz) that takes a package to its board.

    NAME-jetson/
      README.md            the exact commands
      run.sh               on the board: build libmemx + memx-run + libmemx_ops against the board's
                           ONNX Runtime (else the prebuilt binaries), time every device, tegrastats
      bundle.env           what run.sh runs (package, sample tokens, devices), sourced by it
      bundle.json          memx version, package model id, target, every file with its sha256
      NAME.memx/           the package, copied and verified
      sample/tokens.npy    int64 [1, T]: SAMPLE_SEGMENTS segments of random ids in the vocabulary
      cpp/runtime, cpp/ops the C++ sources (runtime without its tests)
      deps/                nlohmann-json and ONNX Runtime headers, when this install has them
      prebuilt/aarch64/    bin/memx-run, lib/ (libmemx, CPU-only ONNX Runtime, libmemx_ops)

The C++ sources come from the source checkout (memx/../cpp, headers under .deps) or, in a wheel,
from memx/edge/cpp (installed there by cpp/ops/bundle_sources.cmake). Everything is written into a
staging directory beside the output and renamed into place at the end: a failed bundle leaves
nothing, an existing output is replaced only with ``force`` and only when it is an earlier bundle.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Callable, Sequence

import memx
from memx.edge.targets import TARGETS, Target
from memx.errors import BackendUnavailableError, PackageError, PackageExistsError
from memx.package import Package, sha256_file
from memx.package.files import apply_umask, dir_mode, move_into_place, remove_dead_leftovers, sibling_path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]  # the repository root when memx runs from a source checkout
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT, BUNDLE_VERSION = "memx.bundle", 1
SAMPLE_SEGMENTS = 64
# cpp/runtime without its tests (the GoogleTest suite needs the repository's tests/data)
RUNTIME_PARTS = ("CMakeLists.txt", "cmake", "include", "src", "tools", "examples")
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "build-*", ".*", "*.so", "*.o")


# --- where the C++ sources are ------------------------------------------------------------------
@dataclass(frozen=True)
class CppSources:
    """The C++ sources a bundle carries, and the headers the board may lack."""

    runtime: Path  # cpp/runtime
    ops: Path  # cpp/ops
    nlohmann: Path | None  # a prefix "usr" with include/nlohmann/json.hpp (cpp/runtime's MEMX_DEPS/nlohmann/usr)
    ort_headers: Path | None  # an ONNX Runtime include directory (onnxruntime_cxx_api.h)
    origin: str  # "checkout" or "installed"


def source_layouts() -> list[tuple[Path, Path, str]]:
    """(cpp dir, deps dir, origin) in the order they are tried: the source checkout, then the copy
    a wheel installs beside this module."""
    return [(CHECKOUT / "cpp", CHECKOUT / ".deps", "checkout"), (HERE / "cpp", HERE / "cpp" / "deps", "installed")]


def find_cpp_sources(layouts: Sequence[tuple[Path, Path, str]] | None = None) -> CppSources:
    """The first layout with cpp/runtime and cpp/ops; BackendUnavailableError naming where it looked."""
    layouts = source_layouts() if layouts is None else layouts
    for cpp, deps, origin in layouts:
        if (cpp / "runtime" / "CMakeLists.txt").is_file() and (cpp / "ops" / "CMakeLists.txt").is_file():
            usr = deps / "nlohmann" / "usr"
            headers = deps / "onnxruntime" / "include"
            return CppSources(runtime=cpp / "runtime", ops=cpp / "ops", nlohmann=usr if (usr / "include" / "nlohmann" / "json.hpp").is_file() else None,
                              ort_headers=headers if (headers / "onnxruntime_cxx_api.h").is_file() else None, origin=origin)
    looked = ", ".join(str(cpp / "runtime" / "CMakeLists.txt") for cpp, _, _ in layouts)
    raise BackendUnavailableError("the C++ sources of libmemx are not in this memx install", expected=f"one of {looked}", actual="none of them",
                                  hint="run memx from a source checkout, or install a wheel built with cpp/ops/bundle_sources.cmake")


def ort_api_version(include: Path) -> int | None:
    """ORT_API_VERSION of an ONNX Runtime include directory (21 for 1.21): the oldest library these headers work with."""
    found = re.search(r"#define\s+ORT_API_VERSION\s+(\d+)", (include / "onnxruntime_c_api.h").read_text(errors="replace"))
    return int(found[1]) if found else None


# --- prebuilt binaries -----------------------------------------------------------------------------
def default_prebuilt(spec: Target) -> Path | None:
    """The checkout's install tree of the cross build, when it exists."""
    path = CHECKOUT / spec.prebuilt
    return path if (path / "bin" / "memx-run").is_file() else None


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file (183 aarch64, 62 x86-64), None when it is not one."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def check_prebuilt(path: Path, spec: Target) -> None:
    """A prebuilt install tree for the target: bin/memx-run (of the target's machine type) and lib/."""
    exe = path / "bin" / "memx-run"
    if not exe.is_file() or not (path / "lib").is_dir():
        raise BackendUnavailableError("prebuilt binaries not found", expected=f"{exe} and {path / 'lib'} (an install tree of `{spec.prebuilt_make}`)",
                                      actual="missing" if path.is_dir() else f"no directory {path}")
    machine = elf_machine(exe)
    if machine != spec.elf_machine:
        raise BackendUnavailableError(f"prebuilt memx-run is not built for {spec.name} ({spec.arch})", expected=f"an ELF executable of machine {spec.elf_machine} ({spec.arch})",
                                      actual="not an ELF file" if machine is None else f"ELF machine {machine}", hint=f"build it with `{spec.prebuilt_make}`")


# --- the output path ---------------------------------------------------------------------------------
def _some(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a directory memx bundle wrote (its bundle.json says so)."""
    try:
        data = json.loads((path / BUNDLE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT


def check_output(final: Path, *, force: bool, archive: bool) -> None:
    """Refuse an output that exists, unless it is empty (a directory) or ``force`` replaces an
    earlier bundle (a directory with its bundle.json) or archive (a file)."""
    if not os.path.lexists(final):
        return
    kind = os.lstat(final).st_mode
    if archive:
        if not stat.S_ISREG(kind):
            raise PackageExistsError("bundle archive path exists and is not a file", expected=f"a new path (or --force to replace an earlier {final.name})", actual=f"{final} is not a regular file")
        if not force:
            raise PackageExistsError("bundle archive already exists", expected="a new path (or --force)", actual=str(final))
        return
    if not stat.S_ISDIR(kind):
        raise PackageExistsError("bundle output exists and is not a directory", expected="a new or empty directory", actual=f"{final} is {'a symbolic link' if stat.S_ISLNK(kind) else 'a file'}")
    names = sorted(os.listdir(final))
    if not names:
        return
    if not force:
        raise PackageExistsError("bundle output directory is not empty", expected="a new or empty directory (or --force to replace an earlier bundle)", actual=f"{final} holds {_some(names)}")
    if not is_bundle(final):
        raise PackageExistsError(f"--force replaces only a memx bundle; {final} is not one", expected=f"a directory with a {BUNDLE_FILE} of format {BUNDLE_FORMAT!r}",
                                 actual=f"a directory holding {_some(names)}", hint="choose another --out, or move it away yourself")


def default_output(package: Path, target: str) -> Path:
    """``<package stem>-<target>`` beside the package (gmat.memx -> gmat-jetson)."""
    return package.parent / f"{package_stem(package)}-{target}"


def package_stem(package: Path) -> str:
    name = package.resolve().name if package.name in ("", ".", "..") else package.name
    return name[: -len(".memx")] if name.endswith(".memx") and len(name) > len(".memx") else name


# --- what is written -----------------------------------------------------------------------------------
@dataclass
class BundleResult:
    """What memx bundle wrote."""

    path: Path  # the bundle directory, or the .tar.gz
    archive: bool
    target: str
    package: str  # the package's directory name inside the bundle
    model_id: str
    files: int
    bytes: int
    sources: str  # "checkout" or "installed"
    prebuilt: Path | None  # where the bundled binaries came from
    notes: list[str] = field(default_factory=list)  # what is missing and what it means on the board
    commands: list[str] = field(default_factory=list)  # what the board's owner runs

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "archive": self.archive, "target": self.target, "package": self.package, "model_id": self.model_id,
                "files": self.files, "bytes": self.bytes, "sources": self.sources, "prebuilt": None if self.prebuilt is None else str(self.prebuilt),
                "notes": self.notes, "commands": self.commands}


def bundle(package: str | os.PathLike, *, target: str = "jetson", out: str | os.PathLike | None = None, archive: bool = False,
           prebuilt: str | os.PathLike | bool | None = None, force: bool = False, segments: int = SAMPLE_SEGMENTS,
           sources: CppSources | None = None, progress: Callable[[str], None] | None = None) -> BundleResult:
    """Write a bundle of ``package`` for ``target`` (a name in TARGETS) to ``out`` (default:
    ``<stem>-<target>`` beside the package; with ``archive``, ``out.tar.gz``). ``prebuilt``: an
    install tree of the target's binaries, None for the checkout's (when built), False for none.
    ``force`` replaces an earlier bundle. Nothing is left behind on any error."""
    spec = TARGETS.get(target)
    if segments < 1:
        raise PackageError("sample token file needs at least one segment", expected="segments >= 1", actual=segments)
    src = Path(package)
    pkg = Package.open(src, verify=True)
    final = Path(out) if out is not None else default_output(src, spec.name)
    if archive and not final.name.endswith(".tar.gz"):
        final = final.with_name(final.name + ".tar.gz")
    top = final.name[: -len(".tar.gz")] if archive else final.name
    if final.resolve() == pkg.path.resolve() or pkg.path.resolve() in final.resolve().parents:
        raise PackageError("bundle output lies inside the package it bundles", expected=f"a path outside {pkg.path}", actual=str(final))
    check_output(final, force=force, archive=archive)
    sources = sources or find_cpp_sources()
    notes: list[str] = []
    if prebuilt is False:
        binaries = None
        notes.append(f"no prebuilt {spec.arch} binaries (left out): the board must build from the sources (run.sh needs an ONNX Runtime there)")
    elif prebuilt is None or prebuilt is True:
        binaries = default_prebuilt(spec)
        if binaries is None:
            notes.append(f"no prebuilt {spec.arch} binaries ({CHECKOUT / spec.prebuilt} absent: `{spec.prebuilt_make}` in a checkout makes them): "
                         "the board must build from the sources (run.sh needs an ONNX Runtime there)")
    else:
        binaries = Path(prebuilt)
    if binaries is not None:
        check_prebuilt(binaries, spec)
    if sources.nlohmann is None:
        notes.append("nlohmann-json not bundled (not in this install): the board needs `sudo apt-get install nlohmann-json3-dev` to build")
    say = progress or (lambda _msg: None)

    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(final)
    staging = sibling_path(final, "staging")
    try:
        content = staging / top if archive else staging
        content.mkdir(exist_ok=True)
        say(f"copying {pkg.path} and checking its files")
        pkg_dir = f"{package_stem(src)}.memx"
        shutil.copytree(pkg.path, content / pkg_dir, ignore=shutil.ignore_patterns("__pycache__"))
        copy = Package.open(content / pkg_dir, verify=True)
        say("copying the C++ sources" + (f" and the prebuilt {spec.arch} binaries" if binaries else ""))
        _copy_sources(sources, content)
        if binaries is not None:
            shutil.copytree(binaries, content / "prebuilt" / spec.arch, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        sample = _write_sample(copy, content, segments)
        env = _environment(spec, copy, pkg_dir, sample, sources, has_prebuilt=binaries is not None)
        (content / "bundle.env").write_text(env)
        shutil.copyfile(HERE / "templates" / spec.script, content / "run.sh")
        commands = board_commands(spec, top, archive)
        (content / "README.md").write_text(_readme(spec, copy, pkg_dir, top, archive, sample, binaries is not None, sources, commands))
        apply_umask(content)
        for exe in [content / "run.sh", *sorted((content / "prebuilt" / spec.arch / "bin").glob("*"))]:
            if exe.is_file() and not exe.is_symlink():
                os.chmod(exe, dir_mode())  # 0755 under umask 022: executable where the files are readable
        listing = _listing(content)
        manifest = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "memx": memx.__version__, "target": spec.name, "arch": spec.arch,
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "package": {"dir": pkg_dir, "model_id": copy.manifest.model_id(), "family": copy.manifest.family, "preset": copy.manifest.preset,
                        "precision": copy.manifest.precision, "custom_ops": [f"{o.get('domain')}.{o.get('op')}" for o in copy.manifest.custom_ops]},
            "sample": sample,
            "sources": {"origin": sources.origin, "runtime": "cpp/runtime", "ops": "cpp/ops", "nlohmann": sources.nlohmann is not None,
                        "onnxruntime_headers_api": ort_api_version(sources.ort_headers) if sources.ort_headers else None},
            "prebuilt": None if binaries is None else {"dir": f"prebuilt/{spec.arch}", "arch": spec.arch, "onnxruntime": "CPU-only (PyPI wheel)"},
            "notes": notes,
            "files": listing,
        }
        (content / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        total = sum(f.get("bytes", 0) for f in listing.values())
        if archive:
            say(f"writing {final}")
            tmp = staging / "bundle.tar.gz"
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(content, arcname=top)
            check_output(final, force=force, archive=True)
            _place_file(tmp, final, replace=force)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            check_output(final, force=force, archive=False)  # again: the copy took a while
            move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleResult(path=final, archive=archive, target=spec.name, package=pkg_dir, model_id=copy.manifest.model_id(), files=len(listing) + 1,
                        bytes=total, sources=sources.origin, prebuilt=binaries, notes=notes, commands=commands)


def _place_file(tmp: Path, final: Path, *, replace: bool) -> None:
    """Rename ``tmp`` to ``final``; without ``replace`` a file that appeared meanwhile is refused."""
    if replace:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails when final exists: no replace without --force
    except FileExistsError:
        raise PackageExistsError("bundle archive appeared while it was written", expected="a new path (or --force)", actual=str(final)) from None
    os.unlink(tmp)


def _copy_sources(sources: CppSources, content: Path) -> None:
    runtime = content / "cpp" / "runtime"
    runtime.mkdir(parents=True)
    for part in RUNTIME_PARTS:
        path = sources.runtime / part
        if path.is_dir():
            shutil.copytree(path, runtime / part, ignore=_JUNK)
        elif path.is_file():
            shutil.copy2(path, runtime / part)
    shutil.copytree(sources.ops, content / "cpp" / "ops", ignore=_JUNK)
    if sources.nlohmann is not None:  # the headers and CMake config cpp/runtime finds under MEMX_DEPS
        usr = content / "deps" / "nlohmann" / "usr"
        shutil.copytree(sources.nlohmann / "include", usr / "include")
        cmake = sources.nlohmann / "share" / "cmake"
        if cmake.is_dir():
            shutil.copytree(cmake, usr / "share" / "cmake")
    if sources.ort_headers is not None:
        shutil.copytree(sources.ort_headers, content / "deps" / "onnxruntime" / "include")


def _write_sample(pkg: Package, content: Path, segments: int) -> dict[str, Any]:
    """sample/tokens.npy: int64 [1, segments * S] ids in [0, vocab); one file per extra step input ([steps, 1, ...])."""
    import numpy as np

    m = pkg.manifest
    seg = int(m.segment["max"])
    rng = np.random.default_rng(0)
    (content / "sample").mkdir()
    tokens = rng.integers(0, m.vocab_size, size=(1, segments * seg), dtype=np.int64)
    np.save(content / "sample" / "tokens.npy", tokens)
    inputs = {}
    for inp in m.inputs:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", inp.name)
        np.save(content / "sample" / f"input.{safe}.npy", np.stack([inp.sample(rng, 1, seg) for _ in range(segments)]))
        inputs[inp.name] = f"sample/input.{safe}.npy"
    return {"tokens": "sample/tokens.npy", "shape": [1, segments * seg], "segment_len": seg, "segments": segments, "vocab_size": m.vocab_size, "inputs": inputs}


def _environment(spec: Target, pkg: Package, pkg_dir: str, sample: dict[str, Any], sources: CppSources, *, has_prebuilt: bool) -> str:
    """bundle.env: the values run.sh reads (shell assignments, each quoted)."""
    m = pkg.manifest
    values = {
        "BUNDLE_FORMAT_VERSION": BUNDLE_VERSION,
        "BUNDLE_MEMX_VERSION": memx.__version__,
        "BUNDLE_TARGET": spec.name,
        "BUNDLE_ARCH": spec.arch,
        "BUNDLE_PACKAGE": pkg_dir,
        "BUNDLE_MODEL": f"{m.family} ({m.preset or 'no preset'}, {m.precision})",
        "BUNDLE_TOKENS": sample["tokens"],
        "BUNDLE_SEGMENT_LEN": sample["segment_len"],
        "BUNDLE_INPUTS": " ".join(f"{name}={path}" for name, path in sample["inputs"].items()),
        "BUNDLE_CUSTOM_OPS": " ".join(f"{o.get('domain')}.{o.get('op')}" for o in m.custom_ops),
        "BUNDLE_DEVICES": " ".join(spec.devices),
        "BUNDLE_PREBUILT": f"prebuilt/{spec.arch}" if has_prebuilt else "",
        "BUNDLE_NLOHMANN": "deps" if sources.nlohmann is not None else "",
        "BUNDLE_ORT_HEADERS": "deps/onnxruntime/include" if sources.ort_headers is not None else "",
        "BUNDLE_ORT_HEADERS_API": (ort_api_version(sources.ort_headers) or "") if sources.ort_headers is not None else "",
        "BUNDLE_TARGET_CC": spec.target_cc,
        "BUNDLE_TRT_VERSION": spec.trt_version,
    }
    lines = [f"# written by memx bundle {memx.__version__} for {spec.name}: what run.sh runs (it sources this file)"]
    lines += [f"{k}={shlex.quote(str(v))}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def board_commands(spec: Target, top: str, archive: bool) -> list[str]:
    """What the board's owner types, from copying the bundle to the latency table."""
    copy = [f"scp {top}.tar.gz {spec.name}:~/", f"ssh {spec.name}", f"tar xzf {top}.tar.gz && cd {top}"] if archive else \
        [f"scp -r {top} {spec.name}:~/", f"ssh {spec.name}", f"cd {top}"]
    return [*copy, "./run.sh"]


def _readme(spec: Target, pkg: Package, pkg_dir: str, top: str, archive: bool, sample: dict[str, Any], has_prebuilt: bool, sources: CppSources,
            commands: list[str]) -> str:
    m = pkg.manifest
    ops = ", ".join(f"{o.get('domain')}.{o.get('op')}" for o in m.custom_ops) or "none"
    text = Template((HERE / "templates" / spec.readme).read_text())
    return text.safe_substitute(
        top=top, target=spec.name, description=spec.description, arch=spec.arch, memx_version=memx.__version__, package=pkg_dir, family=m.family,
        preset=m.preset or "no preset", precision=m.precision, model_id=m.model_id(), custom_ops=ops, segment_len=sample["segment_len"],
        segments=sample["segments"], tokens_shape="x".join(str(n) for n in sample["shape"]), target_cc=spec.target_cc, trt_version=spec.trt_version,
        commands="\n".join(f"    {c}" for c in commands),
        prebuilt=(f"`prebuilt/{spec.arch}/`: memx-run, libmemx, libmemx_ops and a CPU-only ONNX Runtime for {spec.arch}, used when the board has no "
                  "ONNX Runtime to build against (CPU only)") if has_prebuilt else
                 f"no prebuilt {spec.arch} binaries in this bundle: the board builds from the sources (it needs an ONNX Runtime)",
        nlohmann="`deps/nlohmann/`: nlohmann-json's headers (no apt needed)" if sources.nlohmann else
                 "nlohmann-json is not bundled: `sudo apt-get install nlohmann-json3-dev` on the board",
        archive_note=f"`{top}.tar.gz` holds the directory `{top}/`." if archive else "",
    )


def _listing(content: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``content`` (bundle.json aside) with its size and sha256; links as links."""
    files: dict[str, dict[str, Any]] = {}
    for here, dirs, names in os.walk(content):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(here, d))]):
            path = Path(here) / name
            rel = path.relative_to(content).as_posix()
            if rel == BUNDLE_FILE:
                continue
            if path.is_symlink():
                files[rel] = {"link": os.readlink(path)}
            elif path.is_file():
                files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return dict(sorted(files.items()))


def check_bundle(path: str | os.PathLike) -> list[str]:
    """The files of a bundle directory that do not match its bundle.json (empty: all match)."""
    root = Path(path)
    data = json.loads((root / BUNDLE_FILE).read_text())
    problems = []
    for rel, info in data["files"].items():
        p = root / rel
        if "link" in info:
            if not p.is_symlink() or os.readlink(p) != info["link"]:
                problems.append(f"{rel}: expected a link to {info['link']}")
        elif not p.is_file() or p.is_symlink():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
            problems.append(f"{rel}: content differs")
    return problems


__all__ = ["BUNDLE_FILE", "BundleResult", "CppSources", "bundle", "board_commands", "check_bundle", "find_cpp_sources", "is_bundle"]
