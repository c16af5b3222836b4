"""One self-contained HTML page for a data-validation report.

``render_html`` takes the JSON-ready dict of a validation report (``ValidationReport.to_dict()``)
and returns a page that renders offline: inline CSS, no scripts, no external URLs, and every
picture a base64 PNG drawn with matplotlib's Agg canvas. Top to bottom it shows the verdict,
the errors and warnings (what people open the page for), the quarantined files, a table per
class, per-class distributions of the measured facts, the Great Expectations checks and notes.

Everything that comes from the data (paths, labels, reasons, notes) is HTML-escaped. The module
imports nothing from ``audioflow.validation``, which takes ``DATASET`` and the silence floor
from here.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

Cell = str | tuple[str, str]  # a table cell: escaped HTML, or (escaped HTML, td class)

DATASET = "<dataset>"  # path of problems that belong to the whole collection
SILENT_DBFS = -200.0  # rms_dbfs of digital silence (validation.RMS_FLOOR_DBFS)
MAX_ROWS = 200  # rows shown per problem table / quarantine list; the JSON report has them all
FOLD_ROWS = 25  # longer problem tables start folded (click the summary to open)

# (facts column, panel title, factor applied before plotting)
_METRICS: tuple[tuple[str, str, float], ...] = (
    ("duration_s", "duration (s)", 1.0),
    ("rms_dbfs", "level (RMS dBFS)", 1.0),
    ("peak", "peak |x| (0..1)", 1.0),
    ("clipped_fraction", "clipped samples (%)", 100.0),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1240px;
       padding: 0 1em; color: #1f2328; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.root { color: #57606a; margin-top: 0; word-break: break-all; }
.banner { font-size: 1.5em; font-weight: 700; padding: 0.5em 0.8em; border-radius: 6px; margin: 0.8em 0 0.4em; }
.banner.pass { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.banner.warn { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c; }
.banner.fail { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; }
.totals { font-size: 1.05em; }
.totals b { font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.95em; word-break: break-all; }
table.errors th { background: #ffebe9; }
table.warnings th { background: #fff8c5; }
.yes { color: #116329; font-weight: 600; } .no { color: #a40e26; font-weight: 600; }
.more, .caption, .none { color: #57606a; }
summary { cursor: pointer; color: #57606a; }
.bad { color: #a40e26; font-weight: 600; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
ul.paths { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; }
"""


def render_html(report: dict[str, Any]) -> str:
    """Render a validation report dict (see ``ValidationReport.to_dict``) as one offline HTML page."""
    summary = report.get("summary") or {}
    problems = report.get("problems") or []
    facts = report.get("facts") or []
    quarantined = report.get("quarantined") or []
    labels = _labels(summary, facts)
    sections = [
        _header(report),
        _problem_section("Errors", "errors", [p for p in problems if p.get("severity") != "warning"]),
        _problem_section("Warnings", "warnings", [p for p in problems if p.get("severity") == "warning"]),
        _quarantine_section(summary, quarantined) if quarantined else "",
        _class_section(labels, summary, facts, quarantined),
        _plot_section(labels, facts),
        _expectations_section(summary),
        _notes_section(summary.get("notes") or []),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
        f"<title>Data validation</title>\n<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


# --------------------------------------------------------------------------- small helpers


def _esc(value: Any) -> str:
    """HTML-escaped text of a value; None (unknown) shows as an em dash."""
    return "—" if value is None else html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite number as float, else None (None, NaN, inf, bools and strings are unknown)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], css_class: str = "") -> str:
    """A table whose cells are already-escaped HTML."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    cls = f" class='{css_class}'" if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _td(cell: Cell) -> str:
    if isinstance(cell, tuple):
        return f"<td class='{cell[1]}'>{cell[0]}</td>"
    return f"<td>{cell}</td>"


def _fmt(value: Any, spec: str) -> tuple[str, str]:
    """A right-aligned numeric cell; unknown values (None, NaN) show as an em dash."""
    v = _num(value)
    return ("—" if v is None else format(v, spec), "num")


def _count(value: Any) -> tuple[str, str]:
    """A right-aligned integer cell; unknown values show as an em dash."""
    v = _num(value)
    return ("—" if v is None else str(int(v)), "num")


def _labels(summary: dict[str, Any], facts: list[dict[str, Any]]) -> list[str]:
    """Every label: those the summary counts, then any other label seen in the facts."""
    labels = list(_per_label(summary))
    seen = set(labels)
    for f in facts:
        lb = str(f.get("label"))
        if lb not in seen:
            seen.add(lb)
            labels.append(lb)
    return labels


def _per_label(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary's per-label counts keyed by label text (facts labels are compared as text too)."""
    return {str(lb): counts or {} for lb, counts in (summary.get("per_label") or {}).items()}


def _readable(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in facts if f.get("readable")]


# --------------------------------------------------------------------------- verdict and problems


def _status(report: dict[str, Any]) -> tuple[str, str]:
    """(css class, banner text) from ok, policy and the counts."""
    summary = report.get("summary") or {}
    n_quarantined = summary.get("n_quarantined", len(report.get("quarantined") or []))
    if not report.get("ok", False):
        return "fail", "FAILED"
    if report.get("policy") == "quarantine" and n_quarantined:
        return "warn", f"QUARANTINED {_plural(n_quarantined, 'file')}, continued"
    if summary.get("n_warnings", 0):
        return "warn", "PASSED WITH WARNINGS"
    return "pass", "PASSED"


def _header(report: dict[str, Any]) -> str:
    """Title, data root, status banner and the one line of totals."""
    s = report.get("summary") or {}
    css, text = _status(report)

    def bold(key: str) -> str:
        return f"<b>{_esc(s.get(key, 0))}</b>"

    def noun(key: str, word: str) -> str:
        return f"{bold(key)} {word if s.get(key, 0) == 1 else word + 's'}"

    totals = [
        noun("n_files", "file"),
        f"{bold('n_readable')} readable",
        f"{noun('n_errors', 'error')} in {noun('n_error_files', 'file')}",
        f"{noun('n_warnings', 'warning')} in {noun('n_warning_files', 'file')}",
        f"{bold('n_quarantined')} quarantined",
        f"{bold('n_used')} used",
    ]
    line = " · ".join(totals)
    policy = f" · policy <b>{_esc(report['policy'])}</b>" if report.get("policy") else ""
    return (
        "<h1>Data validation</h1>\n"
        f"<p class='root'>Data root: <code>{_esc(s.get('root', ''))}</code></p>\n"
        f"<div class='banner {css}' id='status'>{_esc(text)}</div>\n"
        f"<p class='totals'>{line}{policy}</p>"
    )


def _problem_section(title: str, css_class: str, problems: list[dict[str, Any]]) -> str:
    """A problem table, dataset-level problems first, at most MAX_ROWS rows."""
    heading = f"<h2 id='{css_class}'>{title} ({len(problems)})</h2>"
    if not problems:
        return f"{heading}\n<p class='none'>No {title.lower()}.</p>"
    ordered = sorted(problems, key=lambda p: p.get("path") != DATASET)  # stable: keeps the report's order
    rows = [[(_esc(p.get("path")), "path"), _esc(p.get("check")), _esc(p.get("reason"))] for p in ordered[:MAX_ROWS]]
    table = f"{_table(['path', 'check', 'reason'], rows, css_class)}\n{_more(len(problems), title.lower())}"
    by_check = Counter(str(p.get("check")) for p in problems)
    counts = ", ".join(f"{_esc(check)} {n}" for check, n in by_check.most_common())
    # A long list folds away (a plain <details>, no script) so the rest of the page stays in reach.
    fold = " open" if len(problems) <= FOLD_ROWS else ""
    return (f"{heading}\n<details{fold}><summary>by check: {counts}</summary>\n{table}\n</details>")


def _more(total: int, what: str) -> str:
    """The 'N more' note under a list cut at MAX_ROWS (empty when nothing was cut)."""
    if total <= MAX_ROWS:
        return ""
    return (
        f"<p class='more'>Showing the first {MAX_ROWS} of {total} {what}; "
        f"{total - MAX_ROWS} more are in the JSON report.</p>"
    )


def _quarantine_section(summary: dict[str, Any], quarantined: list[str]) -> str:
    """The quarantined files and the check that used + quarantined = listed."""
    used, n_q = summary.get("n_used", 0), summary.get("n_quarantined", len(quarantined))
    listed = summary.get("n_listed", summary.get("n_files", 0))  # manifest lines, missing files included
    adds_up = "" if used + n_q == listed else " <span class='bad'>(does not add up: the report is inconsistent)</span>"
    items = "\n".join(f"<li>{_esc(p)}</li>" for p in quarantined[:MAX_ROWS])
    return (
        f"<h2 id='quarantined'>Quarantined files ({len(quarantined)})</h2>\n"
        "<p>These entries (recordings, manifest lines) were left out of the data passed on; the rest continued. "
        f"used + quarantined = listed: {_esc(used)} + {_esc(n_q)} = {_esc(listed)}{adds_up}</p>\n"
        f"<ul class='paths'>\n{items}\n</ul>\n{_more(len(quarantined), 'quarantined files')}"
    )


# --------------------------------------------------------------------------- per-class table


def _class_section(
    labels: list[str], summary: dict[str, Any], facts: list[dict[str, Any]], quarantined: list[str]
) -> str:
    """One row per label: counts, medians and what sample rates / channel counts were seen."""
    heading = "<h2 id='classes'>Per class</h2>"
    if not labels:
        return f"{heading}\n<p class='none'>No labels: the dataset lists no files.</p>"
    per_label = _per_label(summary)
    label_of = {str(f.get("path")): str(f.get("label")) for f in facts}
    n_quarantined = Counter(label_of.get(str(p)) for p in quarantined)
    by_label: dict[str, list[dict[str, Any]]] = {lb: [] for lb in labels}
    for f in _readable(facts):
        by_label[str(f.get("label"))].append(f)
    headers = ["label", "listed", "usable", "quarantined", "median duration (s)", "median RMS (dBFS)",
               "max clipped (%)", "sample rates (Hz)", "channels"]  # fmt: skip
    rows = []
    for lb in labels:
        counts = per_label.get(lb, {})
        listed = counts.get("listed", sum(str(f.get("label")) == lb for f in facts))
        rows.append(
            [_esc(lb), _count(listed), _count(counts.get("usable")), _count(n_quarantined[lb]),
             *_class_stats(by_label[lb])]
        )  # fmt: skip
    caption = (
        "<p class='caption'>Statistics are over decoded files. "
        "Median RMS leaves out digitally silent files (counted in brackets).</p>"
    )
    return f"{heading}\n{_table(headers, rows, 'classes')}\n{caption}"


def _class_stats(facts: list[dict[str, Any]]) -> list[Cell]:
    """Median duration, median RMS (silent count), max clipped %, rates and channel counts seen."""
    durations = _values(facts, "duration_s")
    levels = _values(facts, "rms_dbfs")
    loud = [v for v in levels if v > SILENT_DBFS]
    silent = len(levels) - len(loud)
    clipped = _values(facts, "clipped_fraction")
    rms = _fmt(statistics.median(loud) if loud else None, ".1f")
    if silent:
        rms = (f"{rms[0]} ({silent} silent)", "num")
    return [
        _fmt(statistics.median(durations) if durations else None, ".2f"),
        rms,
        _fmt(max(clipped) * 100 if clipped else None, ".2f"),
        _esc(_seen(facts, "sample_rate") or None),
        _esc(_seen(facts, "channels") or None),
    ]


def _values(facts: list[dict[str, Any]], key: str) -> list[float]:
    """The known (finite) values of one column."""
    return [v for v in (_num(f.get(key)) for f in facts) if v is not None]


def _seen(facts: list[dict[str, Any]], key: str) -> str:
    """Distinct known integer values of a column, ascending, comma-separated."""
    return ", ".join(str(int(v)) for v in sorted(set(_values(facts, key))))


# --------------------------------------------------------------------------- pictures


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


# --------------------------------------------------------------------------- checks and notes


def _expectations_section(summary: dict[str, Any]) -> str:
    """The Great Expectations checks: severity, success, unexpected and evaluated counts."""
    expectations = summary.get("expectations") or {}
    severities = summary.get("severities") or {}
    heading = "<h2 id='expectations'>Great Expectations checks</h2>"
    if not expectations:
        return f"{heading}\n<p class='none'>No checks were run.</p>"
    rows = [
        [_esc(name), _esc(severities.get(name)), _yes_no(e.get("success")),
         _count(e.get("unexpected_count")), _count(e.get("element_count"))]
        for name, e in expectations.items()
    ]  # fmt: skip
    overall = _yes_no(summary.get("gx_success"))
    return (
        f"{heading}\n{_table(['check', 'severity', 'success', 'unexpected', 'evaluated'], rows)}\n"
        f"<p>All Great Expectations checks passed: {overall}</p>"
    )


def _yes_no(value: Any) -> str:
    if value is None:
        return "—"
    return "<span class='yes'>yes</span>" if value else "<span class='no'>no</span>"


def _notes_section(notes: list[str]) -> str:
    items = "\n".join(f"<li>{_esc(n)}</li>" for n in notes)
    body = f"<ul>\n{items}\n</ul>" if notes else "<p class='none'>No notes.</p>"
    return f"<h2 id='notes'>Notes</h2>\n{body}"
