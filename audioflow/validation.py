"""Data validation: measure every recording once, then let Great Expectations judge the facts.

``collect_facts`` decodes each file once and records what it is (rate, channels, duration,
loudness, clipping); it never raises for a bad file. ``validate`` hands that table to a real
Great Expectations 1.x suite (ephemeral context, pandas data source) and turns every failing
row into a ``(path, reason)`` problem that names the actual value, so one run lists all of them.

Great Expectations is imported inside the functions that need it: it takes seconds to import.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from audioflow.config import CHECK_SEVERITY, ValidateConfig
from audioflow.errors import AudioflowError
from audioflow.manifest import Dataset

# DATASET ("<dataset>"): the "path" of problems that belong to no single file; defined beside
# the page that shows it. The facts and the GX suites live in their own modules; their names
# stay importable from here.
from audioflow.validation_facts import (  # noqa: F401
    FACT_COLUMNS,
    RMS_FLOOR_DBFS,
    _typed,
    collect_facts,
    file_facts,
)
from audioflow.validation_gx import (  # noqa: F401
    _dataset_checks,
    _file_checks,
    _group_checks,
    _group_labels,
    _gx_context,
    _import_gx,
    _label_counts,
    _Outcome,
    _plain,
    _run_suite,
    _with_content_columns,
)
from audioflow.validation_html import DATASET

log = logging.getLogger(__name__)


class Problem(NamedTuple):
    """One finding: where (a recording, ``manifest.csv:LINE`` or ``<dataset>``), which check,
    how serious (``error``, ``warning`` or ``info``, from ``validate.severity``) and why, with the value."""

    path: str
    check: str
    severity: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


RANK = {"error": 0, "warning": 1, "info": 2}
_BLOCK = 4096  # facts rows turned into JSON at a time
SHOWN = 3  # files named per kind of finding on the console (every one with verbose)


def _order(p: Problem) -> tuple:
    return RANK.get(p.severity, 1), p.path == DATASET, p.path, p.check, p.reason


def console_lines(problems: list[Problem], left_out: Collection[str] = (), verbose: bool = False,
                  where: str = "") -> list[str]:
    """What the console shows: every error as ``path: reason`` (``(left out)`` when quarantined),
    then one line per check for the warnings and the information: how many files, the first
    ``SHOWN`` and one reason, and ``where`` the full list is. ``verbose``: every finding's line."""
    ordered = sorted(problems, key=_order)
    lines = [f"{p.line()} (left out)" if p.path in left_out else p.line() for p in ordered if p.severity == "error"]
    rest = [p for p in ordered if p.severity != "error"]
    if verbose:
        return lines + [f"{p.line()} ({p.severity})" for p in rest]
    for (severity, check), group in groupby(sorted(rest, key=lambda p: (RANK.get(p.severity, 1), p.check)),
                                           key=lambda p: (p.severity, p.check)):
        found = list(group)
        if len(found) == 1:
            lines.append(f"{found[0].line()} ({severity})")
            continue
        files = [p.path for p in found if p.path != DATASET]
        what = _plural(len(files), "file") if len(files) == len(found) else _plural(len(found), "finding")
        names = f": {', '.join(files[:SHOWN])}" + (f" and {len(files) - SHOWN} more" if len(files) > SHOWN else "")
        lines.append(f"{check} ({severity}), {what}{names if files else ''}; e.g. {found[0].line()}"
                     + (f"; every one in {where}" if where else ""))
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class DataValidationError(AudioflowError, ValueError):
    """Raised when validation fails; the message lists every error, then the warnings."""

    def __init__(self, problems: list[Problem], root: str | Path | None = None,
                 report: ValidationReport | None = None):
        self.problems = sorted(problems, key=_order)
        self.report = report
        errors = [p for p in self.problems if p.severity == "error"]
        where = f" in {root}" if root is not None else ""
        n_files = len({p.path for p in errors if p.path != DATASET})
        head = f"data validation failed{where}: {len(errors)} error(s)"
        n_warn = sum(p.severity == "warning" for p in self.problems)
        lines = [f"{head}, {n_files} failing file(s)" + (f", and {n_warn} warning(s)" if n_warn else "")]
        lines += console_lines(self.problems)
        super().__init__("\n".join(lines))

# --------------------------------------------------------------------------- report


@dataclass
class ValidationReport:
    """Outcome of ``validate``: every problem with its severity, the facts it was judged on,
    what was quarantined (``on_error: quarantine``) and a summary.

    ``ok``: no error is left standing (under quarantine, the errors that remain are the ones
    leaving files out cannot fix, such as a class that became too small).
    """

    ok: bool
    problems: list[Problem]
    facts: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    policy: str = "fail"
    quarantined: list[str] = field(default_factory=list)  # listed entries not used, each with an error
    gx: dict[str, Any] = field(default_factory=dict, repr=False)  # per table: GX suite and result (JSON)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {**self._head(), "facts": _records(self.facts)}

    def _head(self) -> dict[str, Any]:
        """Everything but the facts: a size set by the findings, not by the collection."""
        return {
            "ok": self.ok,
            "policy": self.policy,
            "summary": self.summary,
            "problems": [p._asdict() for p in self.problems],
            "quarantined": list(self.quarantined),
        }

    def to_json(self, path: str | Path) -> None:
        """``to_dict`` as JSON, the facts one line a recording (json's C encoder: indenting them is
        slow), written a block of rows at a time: memory stays flat however many recordings."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as f:
            f.write(json.dumps(self._head(), indent=2)[:-2] + ',\n  "facts": [')
            for start in range(0, len(self.facts), _BLOCK):
                rows = _records(self.facts.iloc[start : start + _BLOCK])
                f.write(("\n" if start == 0 else ",\n") + ",\n".join(f"    {json.dumps(row)}" for row in rows))
            f.write("\n  ]\n}\n" if len(self.facts) else "]\n}\n")

    def to_html(self, path: str | Path) -> None:
        from audioflow.validation_html import FACTS_SHOWN, render_html

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        shown = self.facts[[c for c in FACTS_SHOWN if c in self.facts.columns]]  # the page's columns only
        p.write_text(render_html({**self._head(), "facts": _records(shown)}))

    def quarantine_table(self) -> pd.DataFrame:
        """The entries left out, each with its first reason (errors come first)."""
        reasons: dict[str, str] = {}
        for p in self.problems:
            reasons.setdefault(p.path, p.reason)
        return pd.DataFrame({"path": self.quarantined, "reason": [reasons.get(q, "") for q in self.quarantined]})

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise DataValidationError(self.problems, self.summary.get("root"), report=self)


def summary_table(report: ValidationReport) -> str:
    """Per class: listed, usable (no error), left out, warnings; and the totals. Plain text."""
    files = report.facts
    left_out = set(report.quarantined)
    errs = {p.path for p in report.errors}
    warns = {p.path for p in report.warnings}
    rows = [("label", "listed", "usable", "left out", "with warnings")]
    for label, g in files.groupby("label"):
        paths = set(g["path"])
        rows.append((str(label), str(len(paths)), str(len(paths - errs)), str(len(paths & left_out)),
                     str(len(paths & warns))))
    s = report.summary
    rows.append(("all", str(s["n_listed"]), str(sum(int(r[2]) for r in rows[1:])), str(s["n_quarantined"]),
                 str(s["n_warning_files"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-safe dicts (NA/NaN -> None, numpy scalars -> Python), made a
    column at a time: pandas converts each column to Python objects in one call."""
    columns = [df[c].astype(object).where(df[c].notna(), None).tolist() for c in df.columns]
    names = [str(c) for c in df.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


# --------------------------------------------------------------------------- validate


def validate(
    ds: Dataset,
    cfg: ValidateConfig,
    facts: pd.DataFrame | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Judge the listing, every recording, then the classes and groups, in one pass.

    The listing's problems come from ingest (``Dataset.problems``); each recording and the
    label and group tables are judged by Great Expectations. Each finding is an error or a
    warning (``validate.severity``); under ``on_error: quarantine`` the recordings with errors
    are left out and the class sizes are judged on what remains. ``facts`` (from
    ``collect_facts``) skips decoding again. Never raises for bad data: call
    ``raise_if_failed`` on the report.
    """
    if facts is None:
        facts = collect_facts(ds, progress=progress)
    table = _with_content_columns(_typed(facts[FACT_COLUMNS]), ds)
    problems: set[Problem] = {
        Problem(p["path"], p["check"], cfg.severity_of(p["check"]), p["reason"])
        for p in ds.problems if cfg.severity_of(p["check"]) != "off"
    }

    gx = _import_gx()
    ctx = _gx_context(gx)
    kept: dict[str, Any] = {}
    # Reasons read the failing row itself, so each can quote the actual value.
    by_path = table.set_index("path", drop=False)
    file_checks = _file_checks(gx, cfg, table)
    outcomes = _run_suite(ctx, gx, "files", table, file_checks, "path", kept)
    for c in file_checks:
        severity = cfg.severity_of(c.key)
        problems |= {Problem(p, c.key, severity, c.reason(by_path.loc[p])) for p in outcomes[c.key].unexpected}

    erring = {p.path for p in problems if p.severity == "error" and p.path != DATASET}
    counts = _label_counts(table, erring, cfg)
    tables = [("label_counts", counts, _dataset_checks(gx, cfg, counts), "label")]
    groups = _group_labels(table)
    if len(groups):
        tables.append(("groups", groups, _group_checks(gx, cfg), "group"))
    for name, df, checks, index in tables:
        if not checks:
            continue
        out = _run_suite(ctx, gx, name, df, checks, index, kept)
        outcomes |= out
        rows = df.set_index(index, drop=False)
        for c in checks:
            if not out[c.key].success:  # a table-level expectation fails without failing rows
                failing = [rows.loc[k] for k in out[c.key].unexpected] or [None]
                problems |= {Problem(DATASET, c.key, cfg.severity_of(c.key), c.reason(r)) for r in failing}

    gx_success = all(o.success for o in outcomes.values())
    if not gx_success and not problems:  # never let a GX failure pass silently
        failed = [k for k, o in outcomes.items() if not o.success]
        problems.add(Problem(DATASET, "gx", "error", f"Great Expectations check(s) failed: {', '.join(failed)}"))

    ordered = sorted(problems, key=_order)
    left_out = _left_out(ds, table, ordered, cfg.on_error)
    standing = [p for p in ordered if p.severity == "error"
                and not (cfg.on_error == "quarantine" and p.path in left_out)]
    summary = _summary(ds, table, counts, ordered, outcomes, gx_success, cfg, left_out)
    report = ValidationReport(ok=not standing, problems=ordered, facts=table, summary=summary,
                              policy=cfg.on_error, quarantined=sorted(left_out), gx=kept)
    log.info("validated %d file(s): %d error(s), %d warning(s)",
             summary["n_files"], summary["n_errors"], summary["n_warnings"])
    return report


def _left_out(ds: Dataset, table: pd.DataFrame, problems: list[Problem], policy: str) -> set[str]:
    """Listed entries that will not be used: those ingest could not take (bad manifest lines,
    missing files) and, under quarantine, every recording with an error."""
    listed_files = set(table["path"])
    out = {p.path for p in problems if p.path != DATASET and p.path not in listed_files
           and p.check != "unlisted"}
    if policy == "quarantine":
        out |= {p.path for p in problems if p.severity == "error" and p.path in listed_files}
    return out


def _summary(
    ds: Dataset,
    table: pd.DataFrame,
    counts: pd.DataFrame,
    problems: list[Problem],
    outcomes: dict[str, _Outcome],
    gx_success: bool,
    cfg: ValidateConfig,
    left_out: set[str],
) -> dict[str, Any]:
    errors = [p for p in problems if p.severity == "error"]
    warns = [p for p in problems if p.severity == "warning"]
    n_used = int((~table["path"].isin(left_out)).sum())
    n_error_files = len({p.path for p in errors if p.path != DATASET})
    if n_used + len(left_out) != ds.listed:  # every listed entry is used or left out, with its reason
        raise RuntimeError(f"validation bookkeeping: {n_used} used + {len(left_out)} left out != "
                           f"{ds.listed} listed")
    return {
        "root": str(ds.root),
        "notes": list(ds.warnings),
        "n_listed": ds.listed,
        "n_files": len(table),
        "n_readable": int(table["readable"].sum()),
        "n_errors": len(errors),
        "n_warnings": len(warns),
        "n_info": sum(p.severity == "info" for p in problems),
        "n_error_files": n_error_files,
        "n_warning_files": len({p.path for p in warns if p.path != DATASET}),
        "n_quarantined": len(left_out),
        "n_used": n_used,
        "n_failing_files": n_error_files,  # the name older reports used
        "n_problems": len(problems),
        "n_dataset_problems": sum(p.path == DATASET for p in problems),
        "per_label": {
            r.label: {"listed": int(r.listed), "usable": int(r.usable)} for r in counts.itertuples()
        },
        "expectations": {
            k: {
                "success": o.success,
                "unexpected_count": _plain(o.unexpected_count),
                "element_count": _plain(o.element_count),
            }
            for k, o in outcomes.items()
        },
        "severities": {k: cfg.severity_of(k) for k in CHECK_SEVERITY},
        "gx_success": gx_success,
    }
