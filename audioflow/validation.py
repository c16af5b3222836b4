"""Data validation: measure every recording once, then let Great Expectations judge the facts.

``collect_facts`` decodes each file once and records what it is (rate, channels, duration,
loudness, clipping); it never raises for a bad file. ``validate`` hands that table to a real
Great Expectations 1.x suite (ephemeral context, pandas data source) and turns every failing
row into a ``(path, reason)`` problem that names the actual value, so one run lists all of them.

Great Expectations is imported inside the functions that need it: it takes seconds to import.
"""

from __future__ import annotations

import html
import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audioflow import audio
from audioflow.config import ValidateConfig
from audioflow.manifest import Dataset

DATASET = "<dataset>"  # the "path" of problems that belong to no single file
RMS_FLOOR_DBFS = -200.0  # stands in for -inf (digital silence), keeps the table JSON-clean
CLIP_LEVEL = 0.999  # |x| at or above this counts as full scale (PCM 16 max reads as 0.99997)
NON_FINITE = "non-finite samples"  # prefix of audio.read's reason for NaN/Inf samples
_CHUNK = 1 << 20  # samples per block when reducing a signal, bounds float64 temporaries

FACT_COLUMNS = [
    "path", "label", "readable", "error", "sample_rate", "channels", "frames", "duration_s",
    "finite", "rms_dbfs", "peak", "clipped_fraction", "sha256",
]  # fmt: skip

log = logging.getLogger(__name__)

ReasonFn = Callable[[Any], str]  # failing row (a pd.Series; None for table-level checks)


class DataValidationError(ValueError):
    """Raised when validation fails; the message lists every problem, one per line."""

    def __init__(self, problems: list[tuple[str, str]], root: str | Path | None = None):
        self.problems = list(problems)
        files = [(p, r) for p, r in self.problems if p != DATASET]
        where = f" in {root}" if root is not None else ""
        n_files = len({p for p, _ in files})
        head = f"data validation failed{where}: {len(self.problems)} problem(s)"
        lines = [f"{head}, {n_files} failing file(s)"]
        lines += [f"{p}: {r}" for p, r in files]
        lines += [f"{p}: {r}" for p, r in self.problems if p == DATASET]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- facts


def file_facts(path: str | Path) -> dict[str, Any]:
    """Decode one recording and measure it; a bad file gives readable=False and the reason."""
    try:
        data, sr = audio.read(path)
    except audio.AudioError as exc:
        return {
            "readable": False,
            "error": exc.reason,
            "sample_rate": pd.NA,
            "channels": pd.NA,
            "frames": pd.NA,
            "duration_s": math.nan,
            # Only a non-finite file is known to be non-finite; for others it is unknown.
            "finite": False if exc.reason.startswith(NON_FINITE) else pd.NA,
            "rms_dbfs": math.nan,
            "peak": math.nan,
            "clipped_fraction": math.nan,
        }
    frames, channels = data.shape
    sum_sq, peak, n_clipped = _signal_stats(data.reshape(-1))
    n = data.size
    rms = math.sqrt(sum_sq / n)
    return {
        "readable": True,
        "error": "",
        "sample_rate": int(sr),
        "channels": int(channels),
        "frames": int(frames),
        "duration_s": frames / sr,
        "finite": True,  # audio.read rejects NaN/Inf, so a decoded file is finite
        "rms_dbfs": max(20.0 * math.log10(rms), RMS_FLOOR_DBFS) if rms > 0 else RMS_FLOOR_DBFS,
        "peak": peak,
        "clipped_fraction": n_clipped / n,
    }


def _signal_stats(flat: np.ndarray) -> tuple[float, float, int]:
    """Sum of squares (float64), peak |x| and count of |x| >= CLIP_LEVEL, in bounded blocks."""
    sum_sq, peak, clipped = 0.0, 0.0, 0
    for start in range(0, flat.size, _CHUNK):
        block = np.abs(flat[start : start + _CHUNK]).astype(np.float64)
        sum_sq += float(np.dot(block, block))
        peak = max(peak, float(block.max()))
        clipped += int(np.count_nonzero(block >= CLIP_LEVEL))
    return sum_sq, peak, clipped


def collect_facts(ds: Dataset, progress: bool = True) -> pd.DataFrame:
    """One row of facts per listed file (FACT_COLUMNS), reading each file once."""
    from tqdm import tqdm

    rows = []
    files = ds.files
    for rel, label, sha in tqdm(
        zip(files["path"], files["label"], files["sha256"], strict=True),
        total=len(files),
        desc="validate: reading audio",
        unit="file",
        disable=not progress,
        leave=False,
    ):
        facts = file_facts(ds.location(rel))
        # soundfile quotes the absolute path; the problem line already names the file.
        facts["error"] = facts["error"].replace(str(ds.location(rel)), rel)
        rows.append({"path": rel, "label": label, **facts, "sha256": sha})
    return _typed(pd.DataFrame(rows, columns=FACT_COLUMNS))


def _typed(facts: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes: nullable ints for header facts that unreadable files lack."""
    return facts.astype(
        {
            "readable": bool,
            "sample_rate": "Int64",
            "channels": "Int64",
            "frames": "Int64",
            "duration_s": float,
            "finite": "boolean",
            "rms_dbfs": float,
            "peak": float,
            "clipped_fraction": float,
        }
    )


# --------------------------------------------------------------------------- report


@dataclass
class ValidationReport:
    """Outcome of ``validate``: every problem, the facts it was judged on, and a summary."""

    ok: bool
    problems: list[tuple[str, str]]
    facts: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "problems": [{"path": p, "reason": r} for p, r in self.problems],
            "facts": _records(self.facts),
        }

    def to_json(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def to_html(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_render_html(self))

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise DataValidationError(self.problems, self.summary.get("root"))


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-safe dicts (NA/NaN -> None, numpy scalars -> Python)."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    return v


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.ok { color: #176117; } .fail { color: #a31515; }
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_html(report: ValidationReport) -> str:
    s = report.summary
    status = (
        '<p class="ok">PASSED: no problems found.</p>'
        if report.ok
        else f'<p class="fail">FAILED: {len(report.problems)} problem(s) in '
        f"{s.get('n_failing_files', 0)} of {s.get('n_files', 0)} file(s).</p>"
    )
    problems = _table(["path", "reason"], [[p, r] for p, r in report.problems])
    notes = "".join(f'<p class="fail">Warning: {html.escape(w)}</p>\n' for w in s.get("warnings", []))
    checks = _table(
        ["check", "success", "unexpected", "evaluated"],
        [
            [k, v["success"], v["unexpected_count"], v["element_count"]]
            for k, v in s.get("expectations", {}).items()
        ],
    )
    labels = _table(
        ["label", "listed", "usable"],
        [[k, v["listed"], v["usable"]] for k, v in s.get("per_label", {}).items()],
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>audioflow data validation</title><style>{_CSS}</style></head><body>\n"
        f"<h1>Data validation</h1>\n<p>Data root: {html.escape(str(s.get('root', '')))}</p>\n"
        f"{status}\n{notes}<h2>Problems</h2>\n{problems if report.problems else '<p>None.</p>'}\n"
        f"<h2>Recordings per label</h2>\n{labels}\n"
        f"<h2>Great Expectations checks</h2>\n{checks}\n"
        f"<p>Great Expectations success: {html.escape(str(s.get('gx_success')))}</p>\n"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- GX plumbing


def _quiet_gx_logging() -> None:
    """Keep GX below ERROR: its modules log INFO/DEBUG chatter, and one pins its own level."""
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(lg, logging.Logger):
            lg.setLevel(logging.NOTSET)  # inherit ERROR from the package logger


def _import_gx() -> Any:
    """Import great_expectations quietly (its dependencies warn at import time)."""
    _quiet_gx_logging()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
    _quiet_gx_logging()  # loggers created during the import
    return gx


def _gx_context(gx: Any) -> Any:
    """An in-memory context with GX's own tqdm bars ("Calculating Metrics") switched off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    _quiet_gx_logging()
    return ctx


@dataclass
class _Check:
    key: str  # name in the summary
    expectation: Any  # a gx.expectations.Expectation
    reason: ReasonFn  # failing row -> human reason naming the actual value


@dataclass
class _Outcome:
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected: list[Any]  # index-column values (paths or labels) of the failing rows


def _run_suite(
    ctx: Any, gx: Any, name: str, df: pd.DataFrame, checks: list[_Check], index_col: str
) -> dict[str, _Outcome]:
    """Validate ``df`` against the checks with GX; map each result back to its check."""
    asset = ctx.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": df}
    )
    suite = gx.ExpectationSuite(name=f"audioflow_{name}")
    for c in checks:
        suite.add_expectation(c.expectation)
    result_format = {
        "result_format": "COMPLETE",  # every failing row, not GX's default sample of 20
        "unexpected_index_column_names": [index_col],
        "return_unexpected_index_query": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation chatter from inside GX
        result = batch.validate(suite, result_format=result_format)
    outcomes: dict[str, _Outcome] = {}
    for r in result.results:
        key = r.expectation_config.meta["check"]
        _raise_on_gx_exception(key, r.exception_info)
        res = r.result or {}
        outcomes[key] = _Outcome(
            success=bool(r.success),
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            unexpected=[row[index_col] for row in res.get("unexpected_index_list") or []],
        )
    return outcomes


def _raise_on_gx_exception(key: str, info: dict | None) -> None:
    """A check that GX could not evaluate is a bug in the suite, not a data problem."""
    if not info:
        return
    infos = [info] if "raised_exception" in info else list(info.values())
    for i in infos:
        if isinstance(i, dict) and i.get("raised_exception"):
            raise RuntimeError(
                f"great_expectations could not evaluate check {key!r}: {i.get('exception_message')}"
            )


# --------------------------------------------------------------------------- checks


def _file_checks(gx: Any, cfg: ValidateConfig, table: pd.DataFrame) -> list[_Check]:
    """Per-file expectations over the facts table (one row per file, indexed by path)."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    # Signal checks only judge decoded files: an unreadable one should report its decode
    # error alone, not also "duration nan out of range". (A GX condition, not a bool test.)
    decoded = Column("readable") == True

    def check(key: str, exp_cls: Any, reason: ReasonFn, **kw: Any) -> _Check:
        return _Check(key, exp_cls(meta={"check": key}, **kw), reason)

    checks = [
        check("readable", E.ExpectColumnValuesToBeInSet, lambda r: r["error"] or "unreadable",
              column="readable", value_set=[True]),
        check("channels", E.ExpectColumnValuesToBeBetween,
              lambda r: f"{r['channels']} channels (allowed 1 to {cfg.max_channels})",
              column="channels", min_value=1, max_value=cfg.max_channels, row_condition=decoded),
        check("duration", E.ExpectColumnValuesToBeBetween, lambda r: _duration_reason(r, cfg),
              column="duration_s", min_value=cfg.min_duration_s, max_value=cfg.max_duration_s,
              row_condition=decoded),
        check("silence", E.ExpectColumnValuesToBeBetween, lambda r: _silence_reason(r, cfg),
              column="rms_dbfs", min_value=cfg.silence_dbfs, row_condition=decoded),
        check("clipping", E.ExpectColumnValuesToBeBetween,
              lambda r: f"clipped: {r['clipped_fraction']:.1%} of samples at full scale "
              f"(max {cfg.max_clipped_fraction:.1%})",
              column="clipped_fraction", max_value=cfg.max_clipped_fraction,
              row_condition=decoded),
        check("duplicate_other_label", E.ExpectColumnValuesToBeBetween,
              lambda r: _mislabel_reason(r, table),
              column="content_labels", max_value=1, row_condition=decoded),
        check("duplicate_across_groups", E.ExpectColumnValuesToBeBetween,
              lambda r: _leak_reason(r, table),
              column="content_split_units", max_value=1, row_condition=decoded),
    ]  # fmt: skip
    if cfg.sample_rates:
        allowed = ", ".join(str(s) for s in sorted(cfg.sample_rates))
        checks.append(
            check("sample_rate", E.ExpectColumnValuesToBeInSet,
                  lambda r: f"sample rate {r['sample_rate']} Hz not allowed ({allowed} Hz)",
                  column="sample_rate", value_set=sorted(cfg.sample_rates),
                  row_condition=decoded)
        )  # fmt: skip
    if cfg.labels:
        checks.append(
            check("label_allowed", E.ExpectColumnValuesToBeInSet,
                  lambda r: f"label {r['label']!r} not in allowed set {sorted(cfg.labels)}",
                  column="label", value_set=sorted(cfg.labels))
        )  # fmt: skip
    return checks


def _duration_reason(r: pd.Series, cfg: ValidateConfig) -> str:
    d = r["duration_s"]
    if d < cfg.min_duration_s:
        return f"too short: {d:.3f} s (min {cfg.min_duration_s:g} s)"
    return f"too long: {d:.1f} s (max {cfg.max_duration_s:g} s)"


def _silence_reason(r: pd.Series, cfg: ValidateConfig) -> str:
    if r["peak"] == 0:
        return f"silent: every sample is zero (RMS below {cfg.silence_dbfs:g} dBFS)"
    return f"silent: RMS {r['rms_dbfs']:.1f} dBFS below {cfg.silence_dbfs:g} dBFS"


def _copies(r: pd.Series, table: pd.DataFrame) -> pd.DataFrame:
    """Other decoded files with exactly the same content as row ``r``."""
    same = table[table["readable"] & (table["sha256"] == r["sha256"])]
    return same[same["path"] != r["path"]]


def _mislabel_reason(r: pd.Series, table: pd.DataFrame) -> str:
    others = _copies(r, table)
    others = others[others["label"] != r["label"]]
    if len(others) == 1:
        o = others.iloc[0]
        return f"same content as {o['path']}, which is labelled {o['label']!r}"
    listed = ", ".join(f"{o.path} (labelled {o.label!r})" for o in others.itertuples())
    return f"same content as {listed}"


def _leak_reason(r: pd.Series, table: pd.DataFrame) -> str:
    others = _copies(r, table)
    others = others[(others["label"] == r["label"]) & (others["split_unit"] != r["split_unit"])]
    names = ", ".join(
        f"{o.path} (group {o.group!r})" if o.group else str(o.path) for o in others.itertuples()
    )
    return (
        f"same content as {names} under the same label {r['label']!r}: "
        "the copies can land in different splits (train/test leak)"
    )


def _with_content_columns(facts: pd.DataFrame, ds: Dataset) -> pd.DataFrame:
    """Add group and the duplicate counts that GX judges (decoded files only).

    content_labels: distinct labels among files with this content (>1 = mislabel).
    content_split_units: distinct split units (group, or the file itself when it has
    none) among same-content, same-label files (>1 = copies can straddle splits).
    """
    t = facts.drop(columns=["group"], errors="ignore").merge(
        ds.files[["path", "group"]], on="path", how="left"
    )
    t["group"] = t["group"].fillna("").astype(str)
    t["split_unit"] = t["group"].where(t["group"] != "", "file:" + t["path"])
    dec = t[t["readable"]]
    t["content_labels"] = dec.groupby("sha256")["label"].transform("nunique")
    t["content_split_units"] = dec.groupby(["sha256", "label"])["split_unit"].transform("nunique")
    return t.astype({"content_labels": "Int64", "content_split_units": "Int64"})


def _label_counts(table: pd.DataFrame, failing: set[str], cfg: ValidateConfig) -> pd.DataFrame:
    """Per label: files listed, and usable ones (passing every per-file check).

    Counting only usable files tells the user whether a class is still big enough once
    its bad files are dropped. Allowed labels with no files at all count 0.
    """
    labels = sorted(set(table["label"]) | set(cfg.labels))
    listed = table["label"].value_counts()
    usable = table.loc[~table["path"].isin(failing), "label"].value_counts()
    return pd.DataFrame(
        {
            "label": labels,
            "listed": [int(listed.get(lb, 0)) for lb in labels],
            "usable": [int(usable.get(lb, 0)) for lb in labels],
        }
    )


def _dataset_checks(gx: Any, cfg: ValidateConfig, counts: pd.DataFrame) -> list[_Check]:
    """Expectations over the per-label counts table (one row per label)."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations

    def few(r: pd.Series) -> str:
        label = r["label"]
        listed = f" ({r['listed']} listed)" if r["listed"] != r["usable"] else ""
        return (
            f"label {label!r} has {r['usable']} usable recording(s){listed}, "
            f"fewer than min_per_class={cfg.min_per_class}"
        )

    def n_classes(_: pd.Series | None) -> str:
        present = sorted(counts.loc[counts["usable"] > 0, "label"])
        return f"{len(present)} class(es) with usable recordings {present}; need at least 2"

    return [
        _Check("min_per_class",
               E.ExpectColumnValuesToBeBetween(column="usable", min_value=cfg.min_per_class,
                                               meta={"check": "min_per_class"}), few),
        _Check("n_classes",
               E.ExpectTableRowCountToBeBetween(min_value=2, row_condition=Column("usable") > 0,
                                                meta={"check": "n_classes"}), n_classes),
    ]  # fmt: skip


# --------------------------------------------------------------------------- validate


def validate(
    ds: Dataset,
    cfg: ValidateConfig,
    facts: pd.DataFrame | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Judge every recording, then the label balance, with Great Expectations.

    ``facts`` (from ``collect_facts``) skips decoding again, e.g. to re-check with another
    config. Never raises for bad data: call ``raise_if_failed`` on the report.
    """
    if facts is None:
        facts = collect_facts(ds, progress=progress)
    table = _with_content_columns(_typed(facts[FACT_COLUMNS]), ds)

    gx = _import_gx()
    ctx = _gx_context(gx)
    # Reasons read the failing row itself, so each can quote the actual value.
    by_path = table.set_index("path", drop=False)
    file_checks = _file_checks(gx, cfg, table)
    file_out = _run_suite(ctx, gx, "files", table, file_checks, "path")
    problems: set[tuple[str, str]] = set()
    for c in file_checks:
        problems |= {(p, c.reason(by_path.loc[p])) for p in file_out[c.key].unexpected}

    counts = _label_counts(table, {p for p, _ in problems}, cfg)
    by_label = counts.set_index("label", drop=False)
    data_checks = _dataset_checks(gx, cfg, counts)
    data_out = _run_suite(ctx, gx, "label_counts", counts, data_checks, "label")
    for c in data_checks:
        out = data_out[c.key]
        if not out.success:  # a table-level expectation fails without failing rows
            rows = [by_label.loc[lb] for lb in out.unexpected] or [None]
            problems |= {(DATASET, c.reason(r)) for r in rows}

    outcomes = {**file_out, **data_out}
    gx_success = all(o.success for o in outcomes.values())
    if not gx_success and not problems:  # never let a GX failure pass silently
        failed = [k for k, o in outcomes.items() if not o.success]
        problems.add((DATASET, f"Great Expectations check(s) failed: {', '.join(failed)}"))

    ordered = sorted(problems, key=lambda pr: (pr[0] == DATASET, pr[0], pr[1]))
    summary = _summary(ds, table, counts, ordered, outcomes, gx_success)
    report = ValidationReport(ok=not ordered, problems=ordered, facts=table, summary=summary)
    log.info(
        "validated %d file(s): %d problem(s) in %d file(s)",
        summary["n_files"], len(ordered), summary["n_failing_files"],
    )  # fmt: skip
    return report


def _summary(
    ds: Dataset,
    table: pd.DataFrame,
    counts: pd.DataFrame,
    problems: list[tuple[str, str]],
    outcomes: dict[str, _Outcome],
    gx_success: bool,
) -> dict[str, Any]:
    failing = {p for p, _ in problems if p != DATASET}
    return {
        "root": str(ds.root),
        "warnings": list(ds.warnings),
        "n_files": len(table),
        "n_readable": int(table["readable"].sum()),
        "n_failing_files": len(failing),
        "n_problems": len(problems),
        "n_dataset_problems": sum(p == DATASET for p, _ in problems),
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
        "gx_success": gx_success,
    }
