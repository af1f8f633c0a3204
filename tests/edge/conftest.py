"""tests/edge: the aarch64 build under qemu-user (`make cpp-aarch64`) and `memx bundle`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge.emulation import INSTALL, missing


@pytest.fixture(scope="module")
def aarch64_build() -> Path:
    """build/aarch64/install, or a skip with the reason."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    return INSTALL
