"""The shared pieces of the validation page: its constants, escaping, and the table cells
(numbers, counts, unknowns as an em dash). Standard library only; imports no other audioflow module.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

Cell = str | tuple[str, str]  # a table cell: escaped HTML, or (escaped HTML, td class)

DATASET = "<dataset>"  # path of problems that belong to the whole collection
SILENT_DBFS = -200.0  # rms_dbfs of digital silence (validation.RMS_FLOOR_DBFS)
MAX_ROWS = 200  # rows shown per problem table / quarantine list; the JSON report has them all
FOLD_ROWS = 25  # longer problem tables start folded (click the summary to open)


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



def _values(facts: list[dict[str, Any]], key: str) -> list[float]:
    """The known (finite) values of one column."""
    return [v for v in (_num(f.get(key)) for f in facts) if v is not None]

