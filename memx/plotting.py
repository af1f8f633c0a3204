"""matplotlib for reports: the headless backend, imported only when a plot is drawn, and
None when matplotlib is not installed (reports then go without plots); the stamp every
report carries (memx version, UTC time, machine)."""

from __future__ import annotations

import base64
import io
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
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


def utc_now() -> str:
    """The time a report is made, to the second: "2026-12-06 07:31:02 UTC"."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, OS, Python, ONNX Runtime, the board (Jetson)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    model = Path("/proc/device-tree/model")
    if model.is_file():  # Jetson and other device-tree boards
        info["board"] = model.read_text(errors="replace").strip("\x00\n ")
    return info


def machine_line(machine: dict[str, Any]) -> str:
    """One line of a machine description (:func:`describe_machine`): CPU, cores, board, OS."""
    cores = f" ({machine['cores']} cores)" if machine.get("cores") else ""
    parts = [f"{machine.get('cpu') or 'unknown CPU'}{cores}"]
    parts += [str(machine[k]) for k in ("board", "platform") if machine.get(k)]
    return ", ".join(parts)


def stamp(version: str, *, created: str | None = None, machine: dict[str, Any] | None = None) -> str:
    """What every report says about its making: "memx 0.1.0 · 2026-12-06 07:31:02 UTC · CPU (2 cores), OS".
    ``version``: memx.__version__ (the caller's: this layer imports nothing of memx); defaults: now, this machine."""
    return f"memx {version} · {created or utc_now()} · {machine_line(machine if machine is not None else describe_machine())}"


def stamp_figure(fig: Any, text: str) -> None:
    """The stamp in small grey type along the figure's bottom edge (so a PNG alone says where it came from)."""
    fig.text(0.005, 0.005, text, fontsize=6, color="0.45", ha="left", va="bottom")
