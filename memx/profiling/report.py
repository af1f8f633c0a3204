"""Profile reports: JSON (for dashboards), CSV (one row per contender), and a
self-contained HTML page with plots (latency histogram, per-segment latency over the
stream) and the machine description."""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from memx import __version__
from memx.package.files import write_text_atomic
from memx.plotting import png_base64, pyplot, stamp, stamp_figure
from memx.profiling.runner import ProfileReport

CSV_FIELDS = ["name", "backend", "precision", "device", "batch", "segment_len", "segments", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms",
              "tokens_per_s", "segments_per_s", "speedup_p50", "state_bytes_per_step", "rss_mb_after_open", "device_memory_mb"]


def csv_rows(report: ProfileReport) -> list[dict[str, Any]]:
    ratios = report.ratios()
    rows = []
    for c in report.contenders:
        rows.append({"name": c.name, "backend": c.backend, "precision": c.precision, "device": c.device, "batch": report.batch,
                     "segment_len": report.segment_len, "segments": report.segments, "p50_ms": c.latency.p50_ms, "p90_ms": c.latency.p90_ms,
                     "p99_ms": c.latency.p99_ms, "max_ms": c.latency.max_ms, "mean_ms": c.latency.mean_ms, "tokens_per_s": c.throughput.tokens_per_s,
                     "segments_per_s": c.throughput.segments_per_s, "speedup_p50": ratios[c.name]["p50"], "state_bytes_per_step": c.state_bytes_per_step,
                     "rss_mb_after_open": c.rss_mb_after_open, "device_memory_mb": c.device_memory_mb})
    return rows


def write_json(report: ProfileReport, path: str | os.PathLike) -> None:
    write_text_atomic(Path(path), json.dumps(report.to_dict(), indent=1) + "\n")


def write_csv(report: ProfileReport, path: str | os.PathLike) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_rows(report))
    write_text_atomic(Path(path), buf.getvalue())


def log_bins(samples: list[np.ndarray], bins: int) -> np.ndarray:
    """Histogram edges evenly spaced in log(latency) over every contender's samples: one shared
    scale on which a 0.3 ms contender is as readable as a 30 ms one."""
    both = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in samples])
    positive = both[both > 0]
    lo = float(positive.min()) if positive.size else 1e-3
    hi = max(float(both.max()) if both.size else lo, lo)
    if hi < lo * 1.05:  # one value (synthetic clocks): a narrow band around it
        lo, hi = lo / 1.1, hi * 1.1
    return np.geomspace(lo, hi, bins + 1)


def latency_figure(report: ProfileReport) -> Any | None:
    """Latency histogram and latency over the stream, both on a log latency axis (a slow
    contender's outliers no longer squash the fast ones into a sliver), each contender's p50
    dashed; the report's stamp (memx version, time, machine) along the bottom. None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import LogFormatter

    samples = [np.asarray(c.samples_ms, dtype=np.float64) for c in report.contenders]
    edges = log_bins(samples, min(60, max(10, max(x.size for x in samples) // 5)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, (c, x) in enumerate(zip(report.contenders, samples)):
        color, shown = colors[i % len(colors)], np.clip(x, edges[0], edges[-1])  # zeros cannot sit on a log axis
        axes[0].hist(shown, bins=edges, alpha=0.5, color=color, label=f"{c.name} (p50 {c.latency.p50_ms:.2f}, p99 {c.latency.p99_ms:.2f} ms)")
        axes[0].axvline(min(max(c.latency.p50_ms, edges[0]), edges[-1]), color=color, linestyle="--", linewidth=0.9)
        axes[1].plot(np.arange(x.size), shown, linewidth=0.8, color=color, label=c.name)
    axes[0].set(xscale="log", xlabel="ms per segment (log scale; dashed: p50)", ylabel="segments", title="latency histogram")
    axes[1].set(yscale="log", xlabel="segment", ylabel="ms (log scale)", title="latency over the stream")
    for axis in (axes[0].xaxis, axes[1].yaxis):
        axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.family}: B={report.batch}, S={report.segment_len}, {report.segments} segments", fontsize=9)
    stamp_figure(fig, report_stamp(report))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def report_stamp(report: ProfileReport) -> str:
    return stamp(report.memx_version, created=report.created, machine=report.machine)


def _figure_png(report: ProfileReport) -> str | None:
    fig = latency_figure(report)
    return None if fig is None else png_base64(fig)


def render_html(report: ProfileReport) -> str:
    esc = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(_fmt(r[k]))}</td>" for k in ("name", "precision", "device", "p50_ms", "p90_ms", "p99_ms", "max_ms", "tokens_per_s", "speedup_p50", "state_bytes_per_step")) + "</tr>"
        for r in csv_rows(report)
    )
    head = "".join(f"<th>{h}</th>" for h in ("contender", "precision", "device", "p50 ms", "p90 ms", "p99 ms", "max ms", "tokens/s", f"speed-up vs {esc(report.baseline.name)}", "state bytes/step"))
    png = _figure_png(report)
    plot = f'<img alt="latency plots" src="data:image/png;base64,{png}">' if png else "<p>(install matplotlib for plots)</p>"
    machine = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in report.machine.items())
    extra = f"<h2>device monitor</h2><pre>{esc(json.dumps(report.extra, indent=1))}</pre>" if report.extra else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>memx profile: {esc(report.package)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}img{{max-width:100%}}.stamp{{color:#666;font-size:90%}}</style></head>
<body><h1>memx profile</h1>
<p class="stamp">{esc(report_stamp(report))}</p>
<p>{esc(report.package)} ({esc(report.family)}): batch {report.batch}, segment {report.segment_len} tokens, {report.segments} timed segments
after {report.warmup} warm-up, interleaved rounds; peak RSS {report.peak_rss_mb:.0f} MiB.</p>
<table><tr>{head}</tr>{rows}</table>
{plot}
<h2>machine</h2><table>{machine}</table>
{extra}
</body></html>
"""


def write_html(report: ProfileReport, path: str | os.PathLike) -> None:
    write_text_atomic(Path(path), render_html(report))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 1e5 else f"{v:,.0f}"
    return "—" if v is None else str(v)


def _scaling_png(report: Any) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    hs = [p.history for p in report.points]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(hs, [p.memory.p50_ms for p in report.points], "o-", label=f"{report.family} (memory model)")
    if report.points[0].baseline is not None:
        axes[0].plot(hs, [p.baseline.p50_ms for p in report.points], "s-", label="full-history Transformer (KV cache)")
    axes[0].set(xscale="log", yscale="log", xlabel="history (tokens)", ylabel="p50 ms per segment", title="latency vs history")
    axes[1].plot(hs, [p.memory_state_bytes / 2**20 for p in report.points], "o-", label="memory model state")
    if report.points[0].baseline_state_bytes is not None:
        axes[1].plot(hs, [p.baseline_state_bytes / 2**20 for p in report.points], "s-", label="KV cache")
    axes[1].set(xscale="log", yscale="log", xlabel="history (tokens)", ylabel="MiB per stream", title="state carried per stream")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_base64(fig)


def render_scaling_html(report: Any) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{p.history:,}</td><td>{p.memory.p50_ms:.2f}</td><td>{p.memory.p99_ms:.2f}</td><td>{g:.2f}×</td>"
        + (f"<td>{p.baseline.p50_ms:.2f}</td><td>{p.baseline.p99_ms:.2f}</td><td>{p.baseline.p50_ms / p.memory.p50_ms:.1f}×</td>" if p.baseline else "<td colspan=3>—</td>")
        + "</tr>"
        for p, g in zip(report.points, report.memory_growth())
    )
    png = _scaling_png(report)
    plot = f'<img alt="scaling plots" src="data:image/png;base64,{png}">' if png else ""
    machine = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in report.machine.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>memx profile --history: {esc(report.package)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}img{{max-width:100%}}.stamp{{color:#666;font-size:90%}}</style></head>
<body><h1>per-segment cost vs history</h1>
<p class="stamp">{esc(stamp(__version__, machine=report.machine))}</p>
<p>{esc(report.package)} ({esc(report.family)}), batch {report.batch}, segments of {report.segment_len} tokens, {report.segments} timed per point.</p>
<table><tr><th>history</th><th>memory p50 ms</th><th>memory p99 ms</th><th>vs first</th><th>full-history p50 ms</th><th>full-history p99 ms</th><th>full / memory</th></tr>{rows}</table>
{plot}<h2>machine</h2><table>{machine}</table></body></html>
"""
