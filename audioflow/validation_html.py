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

import statistics
from collections import Counter
from typing import Any

# The page's constants, cell helpers and pictures live beside it; their names stay importable here.
from audioflow.validation_html_cells import (  # noqa: F401
    DATASET,
    FOLD_ROWS,
    MAX_ROWS,
    SILENT_DBFS,
    Cell,
    _count,
    _esc,
    _fmt,
    _labels,
    _per_label,
    _plural,
    _readable,
    _table,
    _values,
)
from audioflow.validation_html_plots import _plot_section  # noqa: F401

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


# The facts columns the page reads (the JSON report keeps them all).
FACTS_SHOWN = ("path", "label", "readable", "duration_s", "rms_dbfs", "peak", "clipped_fraction", "sample_rate",
               "channels")


def render_html(report: dict[str, Any]) -> str:
    """Render a validation report dict (see ``ValidationReport.to_dict``) as one offline HTML page."""
    summary = report.get("summary") or {}
    problems = report.get("problems") or []
    facts = report.get("facts") or []
    quarantined = report.get("quarantined") or []
    labels = _labels(summary, facts)
    sections = [
        _header(report),
        _problem_section("Errors", "errors", [p for p in problems if p.get("severity") == "error"]),
        _problem_section("Warnings", "warnings", [p for p in problems if p.get("severity") == "warning"]),
        _problem_section("Information", "info", [p for p in problems if p.get("severity") == "info"], optional=True),
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
        # A failed validation passes nothing on: "N used" would read as if the run went on.
        f"{bold('n_used')} used" if report.get("ok", False) else "<b>none</b> passed on (the run stops here)",
    ]
    line = " · ".join(totals)
    policy = f" · policy <b>{_esc(report['policy'])}</b>" if report.get("policy") else ""
    return (
        "<h1>Data validation</h1>\n"
        f"<p class='root'>Data root: <code>{_esc(s.get('root', ''))}</code></p>\n"
        f"<div class='banner {css}' id='status'>{_esc(text)}</div>\n"
        f"<p class='totals'>{line}{policy}</p>"
    )


def _problem_section(title: str, css_class: str, problems: list[dict[str, Any]], optional: bool = False) -> str:
    """A problem table, dataset-level problems first, at most MAX_ROWS rows (none: a line saying
    so, or nothing at all when ``optional``)."""
    heading = f"<h2 id='{css_class}'>{title} ({len(problems)})</h2>"
    if not problems and optional:
        return ""
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


def _seen(facts: list[dict[str, Any]], key: str) -> str:
    """Distinct known integer values of a column, ascending, comma-separated."""
    return ", ".join(str(int(v)) for v in sorted(set(_values(facts, key))))

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
