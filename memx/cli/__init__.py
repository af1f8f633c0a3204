"""The `memx` command line: a thin layer over the Python API, one module per command group
(export/validate, quantize, profile, doctor/build, inspect/zoo, train/quickstart) and one
for rendering.

Exit codes: 0 success, 1 a check failed (e.g. parity beyond tolerance), 2 bad
input or a memx error (the message says what was expected and what was found).
"""

from __future__ import annotations

from memx.cli import bundle, export, generate, inspect, profile, quantize, serve, tensorrt, train  # noqa: F401  (register the commands, in --help order)
from memx.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
