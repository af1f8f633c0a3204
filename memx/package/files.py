"""A memx package on disk (``NAME.memx/``): open with checks, write atomically.

Opening checks the manifest schema, that every listed file exists inside the
package with its recorded size (hash too with ``verify=True``), and that no
ONNX external-data path leaves the package. Writing goes through a staging
directory that is renamed into place only when complete, so a failed export
or update never leaves a half-written package. ``force`` replaces only a memx
package (or an empty directory), in one step on Linux (renameat2 RENAME_EXCHANGE);
staging directories of killed runs are removed at the next start; package files
get the modes the user's umask allows (0755/0644 under 022).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from memx.errors import ManifestError, PackageExistsError, PackageFileError, UnsafePathError
from memx.package.manifest import FORMAT, MANIFEST_FILE, METADATA_KEY, FileInfo, Manifest
from memx.package.limits import MAX_MANIFEST_BYTES, regular_file_size
from memx.package.onnx_scan import MalformedProtobuf, external_data_locations

if TYPE_CHECKING:
    import onnx


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# sha256 of files already hashed, by what changes when a file's bytes change: (path, size,
# mtime_ns, ctime_ns, inode). A later open of the same unchanged file costs a stat, not a hash;
# ctime cannot be set back by a user, so an edit whose mtime was restored still misses.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _VERIFIED[key] = sha256_file(path)
    return digest


def file_info(path: Path) -> FileInfo:
    return FileInfo(bytes=path.stat().st_size, sha256=sha256_file(path))


def safe_join(root: Path, relative: str) -> Path:
    """root / relative, refusing absolute paths and paths that resolve outside root."""
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise UnsafePathError("package path must be relative to the package", expected="a relative path inside the package", actual=relative)
    if "\0" in relative:  # the OS takes no path with a NUL byte (ValueError: embedded null byte)
        raise UnsafePathError("package path holds a NUL byte", expected="a relative path without NUL bytes", actual=repr(relative))
    try:
        root_resolved = root.resolve()
        target = (root_resolved / relative).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop: RuntimeError before Python 3.13, OSError (ELOOP) after
        raise PackageFileError(f"package path {relative!r} cannot be resolved", expected="a file, or links that end at one", actual=f"{type(e).__name__}: {e}") from None
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError("package path leaves the package directory", expected=f"a path inside {root}", actual=relative)
    return target


def check_external_data(onnx_path: Path, root: Path) -> list[str]:
    """Return the external-data files an ONNX model uses, refusing any outside ``root``. Reads
    the protobuf bytes directly (``onnx_scan``): opening a package does not import onnx."""
    try:
        names = external_data_locations(onnx_path.read_bytes())
    except MalformedProtobuf as e:  # not an ONNX model
        raise PackageFileError(f"package file {onnx_path.name!r} is not a readable ONNX model", expected="an ONNX protobuf", actual=f"malformed protobuf: {e}") from None
    locations: set[str] = set()
    for loc in names:
        rel = os.path.relpath(os.path.join(os.path.dirname(onnx_path), loc), root)
        safe_join(root, rel)
        locations.add(rel)
    return sorted(locations)


@dataclass
class Package:
    path: Path
    manifest: Manifest

    verified: bool = False  # every listed file's sha256 was checked at open (not only its size)

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True) -> "Package":
        """Open and check a package: the manifest, every listed file's size and (``verify``, the
        default) its sha256, so a file altered in place is refused before anything reads it.
        Hashes are cached per unchanged file (size, mtime, ctime, inode): a second open costs
        a stat. ``verify=False`` checks sizes only (``Package.verified`` says which)."""
        root = Path(path)
        if not root.is_dir():
            raise PackageFileError("package directory not found", expected="a directory containing memx.json", actual=str(root))
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.exists() and not manifest_path.is_symlink():
            raise ManifestError(f"package has no {MANIFEST_FILE}", expected=str(manifest_path), actual="missing file")
        regular_file_size(manifest_path, MANIFEST_FILE, ManifestError, limit=MAX_MANIFEST_BYTES)  # not a FIFO (it would block), not huge
        if not manifest_path.resolve().is_relative_to(root.resolve()):
            raise UnsafePathError(f"{MANIFEST_FILE} is a link to a file outside the package", expected=f"a file inside {root}", actual=str(manifest_path.resolve()))
        manifest = Manifest.from_bytes(manifest_path.read_bytes(), source=str(manifest_path))
        pkg = cls(root, manifest)
        pkg.check_files(verify=verify)
        pkg.verified = verify
        return pkg

    def file(self, relative: str) -> Path:
        return safe_join(self.path, relative)

    def check_files(self, *, verify: bool = False) -> None:
        for rel, info in self.manifest.files.items():
            p = self.file(rel)
            if not p.is_file():
                raise PackageFileError(f"package file {rel!r} is missing", expected=f"{info.bytes} bytes at {p}", actual="no file")
            size = p.stat().st_size
            if size != info.bytes:
                raise PackageFileError(f"package file {rel!r} has the wrong size", expected=f"{info.bytes} bytes", actual=f"{size} bytes")
            if verify and (digest := cached_sha256(p)) != info.sha256:
                raise PackageFileError(f"package file {rel!r} does not match its hash (altered since export)", expected=info.sha256[:16], actual=digest[:16],
                                       hint="re-export or re-copy the package; open(..., verify=False) / --no-verify skips the check")
        m = self.manifest
        graph_files = [g.file for g in m.graphs + (m.decode.graphs if m.decode else [])] + list((m.onnxruntime_cpu or {}).get("graphs", {}).values())
        for file in graph_files:
            for rel in check_external_data(self.file(file), self.path):
                if rel not in m.files:
                    raise PackageFileError(f"external data {rel!r} of {file} is not listed in the manifest", expected="listed in files", actual="unlisted")

    def size_bytes(self) -> int:
        return sum(info.bytes for info in self.manifest.files.values())


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so readers see either the old or the new content, never a part."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so readers see either the old or the new content, never a part: a
    temporary file beside it, flushed to disk, then renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes it owner-only; the umask says who else may read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def record_validation(pkg: Package, key: str, result: dict) -> None:
    """Keep one validation result in the package's manifest under ``key`` (e.g.
    "onnxruntime:cpu", "precision:precision-vs-torch"), replacing an earlier one of that key;
    the manifest is rewritten atomically."""
    m = pkg.manifest
    m.validation = {**(m.validation or {}), key: result}
    update_manifest(pkg, m)


def update_manifest(pkg: Package, manifest: Manifest) -> None:
    """Replace memx.json atomically (e.g. to record validation results), once the new text
    reads back as a manifest (a NaN in a record, say, would make the package unreadable)."""
    text = manifest.to_json()
    Manifest.from_json(text, source=f"the new {MANIFEST_FILE}")
    write_text_atomic(pkg.path / MANIFEST_FILE, text)
    pkg.manifest = manifest


# --- file modes: what the user's umask allows ------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc/self/status,
    kernel >= 4.7); elsewhere set and restored at once (a thread creating a file in that
    instant would get 0o077, owner-only: safe, never wider)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a file memx writes: 0o666 less the umask (0o644 under 022, 0o600 under 077)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a directory memx writes: 0o777 less the umask (0o755 under 022, 0o700 under 077)."""
    return 0o777 & ~current_umask()


def apply_umask(root: Path) -> None:
    """Give ``root`` and every directory and regular file under it the umask's modes: mkdtemp,
    mkstemp and safetensors make them owner-only, copies keep their source's. Links are skipped
    (chmod would follow them out of the package)."""
    files, dirs = file_mode(), dir_mode()
    os.chmod(root, dirs)
    for here, subdirs, names in os.walk(root):
        for name in subdirs + names:
            path = os.path.join(here, name)
            kind = os.lstat(path).st_mode
            if stat.S_ISDIR(kind):
                os.chmod(path, dirs)
            elif stat.S_ISREG(kind):
                os.chmod(path, files)


# --- what --force may replace -------------------------------------------------------------------
def _manifest_problem(path: Path) -> str | None:
    """None when ``path`` looks like a memx manifest (a regular JSON file with the memx format
    keys; cheap, not the full schema check of Package.open), else what is wrong with it."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size > MAX_MANIFEST_BYTES:
        return f"is {st.st_size} bytes, too large for a manifest"
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return "is not JSON"
    if not isinstance(data, dict) or data.get("format") != FORMAT or "format_version" not in data:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        return f"is not a memx manifest (format {found!r})"
    return None


def _some(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def unreplaceable(target: Path) -> str | None:
    """None when ``target`` may be replaced by --force (absent, an empty directory or a memx
    package), else what it is, in words for the error message."""
    try:
        kind = os.lstat(target).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(kind):
        return f"a symbolic link (to {os.readlink(target)})"
    if stat.S_ISREG(kind):
        return "a file"
    if not stat.S_ISDIR(kind):
        return "a special file (FIFO, socket or device), not a directory"
    names = sorted(os.listdir(target))
    if not names:
        return None
    if MANIFEST_FILE not in names:
        return f"a directory that is not a memx package (no {MANIFEST_FILE}; holds {_some(names)})"
    problem = _manifest_problem(target / MANIFEST_FILE)
    return None if problem is None else f"a directory that is not a memx package ({MANIFEST_FILE} {problem})"


def check_target(out_dir: str | os.PathLike, *, force: bool = False) -> None:
    """Refuse an output path that exists (without ``force``) or that --force must not replace:
    anything but a memx package or an empty directory. Cheap: callers check before long work."""
    target = Path(out_dir)
    if not os.path.lexists(target):
        return
    if not force:
        raise PackageExistsError("output directory already exists", expected="a new path (or --force)", actual=str(target))
    what = unreplaceable(target)
    if what is not None:
        raise PackageExistsError(f"--force replaces only a memx package; {target} is not one", expected="a memx package or an empty directory",
                                 actual=what, hint="choose another --out, or move it away yourself")


# --- staging directories and the runs that left them --------------------------------------------
def sibling_path(target: Path, kind: str) -> Path:
    """A new directory ``.NAME.KIND-PID-RANDOM`` beside ``target``: the pid tells a later run
    whether its owner is still alive."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts). Anything not known dead is alive."""
    if os.name == "nt":  # os.kill(pid, 0) terminates the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_dead_leftovers(target: Path) -> list[Path]:
    """Remove ``.NAME.staging-PID-*`` and ``.NAME.old-PID-*`` directories beside ``target`` whose
    run is dead (killed before its cleanup ran); those of live runs and anything else stay."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:staging|old)-([1-9][0-9]*)-[a-z0-9_]+")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:  # a parent we may write into but not list: nothing to clean, not a failed export
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and not _pid_alive(int(match[1])):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


# --- renaming into place ------------------------------------------------------------------------
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # linux/fs.h
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


@functools.cache
def _libc_renameat2() -> Callable[..., int] | None:
    """libc's renameat2 (glibc >= 2.28), or None off Linux or in an older libc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """rename(2) with ``flags``; False when the libc, kernel or file system has no such rename
    (the caller falls back), an OSError for any other failure."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` to ``target``, swapping out an old package in one step."""
    if not os.path.lexists(target):
        try:
            if not _renameat2(staging, target, RENAME_NOREPLACE):
                os.rename(staging, target)  # no renameat2 here: a plain rename (replaces only an empty directory)
        except FileExistsError:
            raise PackageExistsError("output directory appeared during the export", expected="a new path (or --force)", actual=str(target)) from None
        return
    if _renameat2(staging, target, RENAME_EXCHANGE):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old package
        return
    # Fallback where RENAME_EXCHANGE is not supported (not Linux, a libc without renameat2, a file
    # system without exchange): two renames, with a moment between them when target is missing.
    old = sibling_path(target, "old")
    os.replace(target, old / "pkg")
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out_dir``; on success it gets the umask's modes
    and replaces ``out_dir`` (in one step on Linux), on any error it is removed and ``out_dir``
    is untouched. ``force`` replaces only a memx package or an empty directory. Staging left by
    killed runs for the same ``out_dir`` is removed first."""
    target = Path(out_dir)
    check_target(target, force=force)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(target)
    staging = sibling_path(target, "staging")
    try:
        yield staging
        apply_umask(staging)
        check_target(target, force=force)  # again: the export took a while, the path may have changed
        move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def mirror_manifest(path: Path, proto: "onnx.ModelProto", manifest: Manifest) -> None:
    """Write the manifest into metadata_props so a bare .onnx is self-describing."""
    import onnx

    import memx

    kept = [p for p in proto.metadata_props if p.key not in (METADATA_KEY, "memx.format_version")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in kept}, METADATA_KEY: manifest.mirror_json(), "memx.format_version": str(manifest.format_version)})
    proto.producer_name, proto.producer_version = "memx", memx.__version__
    onnx.save(proto, str(path))
