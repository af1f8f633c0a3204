"""Taking a package to its board: ``memx bundle PKG --target jetson`` writes one directory with
the package, the C++ sources of libmemx/memx-run/libmemx_ops, prebuilt binaries for the board's
CPU, a sample token file, and a ``run.sh`` that builds against the board's ONNX Runtime and times
every device (docs/cpp.md, "Jetson (JetPack)").

- ``targets``: the registry of boards (``TARGETS``); a new board is one entry there.
- ``bundle``: ``bundle(pkg, target=..., out=...)``, where the C++ sources are (checkout or wheel),
  bundle.json and its check.
"""

from __future__ import annotations

from memx.edge.bundle import BUNDLE_FILE, BundleResult, CppSources, board_commands, bundle, check_bundle, find_cpp_sources, is_bundle
from memx.edge.targets import TARGETS, Target

__all__ = ["BUNDLE_FILE", "TARGETS", "BundleResult", "CppSources", "Target", "board_commands", "bundle", "check_bundle", "find_cpp_sources", "is_bundle"]
