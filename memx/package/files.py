"""A memx package on disk (``NAME.memx/``): open with checks, write atomically.

Opening checks the manifest schema, that every listed file exists inside the
package with its recorded size (hash too with ``verify=True``), and that no
ONNX external-data path leaves the package. Writing goes through a staging
directory that is renamed into place only when complete, so a failed export
or update never leaves a half-written package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx

from memx.errors import ManifestError, PackageError, PackageExistsError, PackageFileError, UnsafePathError
from memx.package.manifest import MANIFEST_FILE, METADATA_KEY, FileInfo, Manifest
from memx.package.limits import MAX_MANIFEST_BYTES, regular_file_size


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
    root_resolved = root.resolve()
    target = (root_resolved / relative).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError("package path leaves the package directory", expected=f"a path inside {root}", actual=relative)
    return target


def check_external_data(onnx_path: Path, root: Path) -> list[str]:
    """Return the external-data files an ONNX model uses, refusing any outside ``root``."""
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX model
        raise PackageFileError(f"package file {onnx_path.name!r} is not a readable ONNX model", expected="an ONNX protobuf", actual=f"{type(e).__name__}: {str(e)[:200]}") from None
    locations: set[str] = set()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:  # Constant nodes may carry external tensors too
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in t.external_data}
            loc = entries.get("location", "")
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
        raw = manifest_path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError(f"{MANIFEST_FILE} is not UTF-8 text", expected="UTF-8", actual=f"byte {raw[e.start]:#04x} at offset {e.start}") from None
        manifest = Manifest.from_json(text, source=str(manifest_path))
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
        for g in self.manifest.graphs:
            for rel in check_external_data(self.file(g.file), self.path):
                if rel not in self.manifest.files:
                    raise PackageFileError(f"external data {rel!r} of {g.file} is not listed in the manifest", expected="listed in files", actual="unlisted")

    def size_bytes(self) -> int:
        return sum(info.bytes for info in self.manifest.files.values())


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so readers see either the old or the new content, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; packages and reports are meant to be shared
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
    """Replace memx.json atomically (e.g. to record validation results)."""
    write_text_atomic(pkg.path / MANIFEST_FILE, manifest.to_json())
    pkg.manifest = manifest


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out_dir``; on success it replaces
    ``out_dir`` in one rename, on any error it is removed and ``out_dir`` is untouched."""
    target = Path(out_dir)
    if target.exists() and not force:
        raise PackageExistsError("output directory already exists", expected="a new path (or --force)", actual=str(target))
    if target.exists() and not target.is_dir():
        raise PackageError("output path exists and is not a directory", expected="a directory path", actual=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "pkg")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def mirror_manifest(path: Path, proto: onnx.ModelProto, manifest: Manifest) -> None:
    """Write the manifest into metadata_props so a bare .onnx is self-describing."""
    import memx

    kept = [p for p in proto.metadata_props if p.key not in (METADATA_KEY, "memx.format_version")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in kept}, METADATA_KEY: manifest.mirror_json(), "memx.format_version": str(manifest.format_version)})
    proto.producer_name, proto.producer_version = "memx", memx.__version__
    onnx.save(proto, str(path))
