"""matplotlib for reports: the headless backend, imported only when a plot is drawn, and
None when matplotlib is not installed (reports then go without plots)."""

from __future__ import annotations

import base64
import io
from typing import Any


def pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png_base64(fig: Any, *, dpi: int = 100) -> str:
    """The figure as base64 PNG (for self-contained HTML); closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
