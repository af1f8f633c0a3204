"""The package contract (DESIGN.md §3): the one home of what exporter, runtimes, calibration,
tensorrt and serving agree on, and the only memx layer they all import.

- ``manifest``: the ``memx.json`` schema (graphs, state, outputs, files, precisions), parsed
  and checked into typed records; the model id snapshots are bound to.
- ``files``: a package directory on disk: opening, file hashes, paths that must stay inside
  it, atomic writes and staged directories.
- ``snapshot``: the versioned, checksummed bytes of a stream's state, and the state schema.

It imports nothing of memx but ``memx.errors``; the C++ runtime reads the same formats
(cpp/runtime/src/manifest.cc, snapshot.cc).
"""

from __future__ import annotations

from memx.package.files import Package, safe_join, sha256_file, update_manifest, write_text_atomic
from memx.package.manifest import FORMAT_VERSION, MANIFEST_FILE, PRECISIONS, FileInfo, GraphInfo, Manifest, OutputInfo, StateInfo, TensorInfo
from memx.package.snapshot import SnapshotData, state_schema

__all__ = [
    "FORMAT_VERSION", "MANIFEST_FILE", "PRECISIONS", "FileInfo", "GraphInfo", "Manifest", "OutputInfo", "Package", "SnapshotData",
    "StateInfo", "TensorInfo", "safe_join", "sha256_file", "state_schema", "update_manifest", "write_text_atomic",
]
