"""The pictures of the validation page: per-class distributions of the measured facts and
the sample-rate / channel-count bar charts, each a base64 PNG drawn with matplotlib's Agg canvas.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Any

from audioflow.validation_html_cells import SILENT_DBFS, _esc, _num, _plural, _readable, _values

# (facts column, panel title, factor applied before plotting)
_METRICS: tuple[tuple[str, str, float], ...] = (
    ("duration_s", "duration (s)", 1.0),
    ("rms_dbfs", "level (RMS dBFS)", 1.0),
    ("peak", "peak |x| (0..1)", 1.0),
    ("clipped_fraction", "clipped samples (%)", 100.0),
)


def _plot_section(labels: list[str], facts: list[dict[str, Any]]) -> str:
    """Per-class distributions and the sample-rate / channel-count bar charts."""
    heading = "<h2 id='pictures'>Distributions</h2>"
    readable = _readable(facts)
    if not readable:
        return f"{heading}\n<p class='none'>No decoded recordings to plot.</p>"
    series, n_silent = _series(labels, readable)
    silent_note = (
        f" {_plural(n_silent, 'digitally silent file')} (RMS at the {SILENT_DBFS:g} dBFS floor) "
        "left out of the level plot."
        if n_silent
        else ""
    )
    return (
        f"{heading}\n<p class='caption'>One row per class; each dot is a decoded file, the box spans the "
        f"middle half and the bar marks the median. Unreadable files are not shown.{silent_note}</p>\n"
        f"{_img(_distribution_png(labels, series, n_silent), 'per-class distributions')}\n"
        f"{_img(_counts_png(readable), 'sample rates and channel counts')}"
    )


def _series(labels: list[str], readable: list[dict[str, Any]]) -> tuple[dict[str, list[list[float]]], int]:
    """Per metric, one list of plotted values per label; and how many silent files were dropped."""
    rows = {lb: i for i, lb in enumerate(labels)}
    series = {key: [[] for _ in labels] for key, _, _ in _METRICS}
    n_silent = 0
    for f in readable:
        i = rows[str(f.get("label"))]
        for key, _, factor in _METRICS:
            v = _num(f.get(key))
            if v is None:
                continue
            if key == "rms_dbfs" and v <= SILENT_DBFS:
                n_silent += 1
                continue
            series[key][i].append(v * factor)
    return series, n_silent


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas: no pyplot, so no global backend switch and no figure to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _rows_size(n_labels: int) -> tuple[float, float]:
    """Figure height (inches) and tick font size (points) for a plot with one row per label.

    Grows by a quarter inch per label up to 20 inches (about 75 labels); past that the rows
    get thinner and the font shrinks with them, down to 4 pt.
    """
    height = min(20.0, max(2.4, 1.3 + 0.25 * n_labels))
    row_pt = (height - 1.3) / max(n_labels, 1) * 72
    return height, max(4.0, min(9.0, 0.7 * row_pt))


def _tick(label: str) -> str:
    """A label as plain matplotlib text: one line, at most 28 characters, '$' not read as math."""
    text = " ".join(label.split())
    text = text if len(text) <= 28 else text[:27] + "…"
    return text.replace("$", r"\$")


def _distribution_png(labels: list[str], series: dict[str, list[list[float]]], n_silent: int) -> bytes:
    """One panel per metric, sharing the label axis: a strip of files over a quartile box per label."""
    height, fontsize = _rows_size(len(labels))
    fig = _figure(12.0, height)
    axes = fig.subplots(1, len(_METRICS), sharey=True)
    for ax, (key, title, _) in zip(axes, _METRICS):
        if key == "rms_dbfs" and n_silent:
            title += f"\n{_plural(n_silent, 'silent file')} not shown"
        _strip_box(ax, series[key], title)
    axes[0].set_yticks(range(len(labels)), [_tick(lb) for lb in labels], fontsize=fontsize)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)  # first label at the top, as in the table
    axes[2].set_xlim(-0.02, 1.02)  # peak: the full 0..1 scale
    top = max(1.0, *(max(r, default=0.0) for r in series["clipped_fraction"]))
    axes[3].set_xlim(-0.02 * top, 1.02 * top)  # clipped: at least 0..1 %, never negative
    return _png(fig)


def _strip_box(ax: Any, rows: list[list[float]], title: str) -> None:
    """Draw, for each row, a light interquartile box, a median bar and the jittered points.

    All rows go into one call per artist kind: one call per row is slow with 50 labels.
    """
    import numpy as np

    filled = [i for i, values in enumerate(rows) if values]
    if not filled:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
    else:
        q1, med, q3 = np.array([np.percentile(rows[i], [25, 50, 75]) for i in filled]).T
        y = np.array(filled)
        ax.barh(y, q3 - q1, left=q1, height=0.6, color="#cfe2f3", edgecolor="#6d9eeb", linewidth=0.8, zorder=1)
        ax.vlines(med, y - 0.3, y + 0.3, color="#1c4587", linewidth=1.6, zorder=3)
        xs = np.concatenate([rows[i] for i in filled])
        ys = np.repeat(y, [len(rows[i]) for i in filled])
        jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(xs))  # fixed: same report, same picture
        ax.scatter(xs, ys + jitter, s=7, color="#e06666", alpha=0.55, linewidths=0, zorder=2)
    ax.use_sticky_edges = False  # bars pin the x limits to their edges; keep a margin instead
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)


def _counts_png(readable: list[dict[str, Any]]) -> bytes:
    """Bar charts of how many decoded files have each sample rate and each channel count."""
    fig = _figure(12.0, 2.3)
    for ax, key, title in zip(fig.subplots(1, 2), ("sample_rate", "channels"), ("sample rate (Hz)", "channels")):
        counts = Counter(int(v) for v in _values(readable, key))
        keys = sorted(counts)
        bars = ax.bar([str(k) for k in keys], [counts[k] for k in keys], color="#6d9eeb", width=0.6)
        ax.bar_label(bars, fontsize=8)
        pad = (max(len(keys), 4) - len(keys)) / 2  # room for four bars, so one bar is not a wall
        ax.set_xlim(-0.5 - pad, len(keys) - 0.5 + pad)
        ax.set_title(f"{title}: files", fontsize=10)
        ax.set_ylim(0, max(counts.values(), default=1) * 1.18)
        ax.tick_params(labelsize=8)
    return _png(fig)
