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
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from audioflow import audio, storage
from audioflow.config import CHECK_SEVERITY, ValidateConfig
from audioflow.manifest import Dataset

# DATASET ("<dataset>"): the "path" of problems that belong to no single file. RMS_FLOOR_DBFS
# stands in for -inf (digital silence) and keeps the table JSON-clean. Both are defined beside
# the page that shows them.
from audioflow.validation_html import DATASET
from audioflow.validation_html import SILENT_DBFS as RMS_FLOOR_DBFS

CLIP_LEVEL = 0.999  # |x| at or above this counts as full scale (PCM 16 max reads as 0.99997)
NON_FINITE = "non-finite samples"  # prefix of audio.read's reason for NaN/Inf samples
_CHUNK = 1 << 20  # samples per block when reducing a signal, bounds float64 temporaries

FACT_COLUMNS = [
    "path", "label", "readable", "error", "truncation", "sample_rate", "channels", "frames", "duration_s",
    "finite", "rms_dbfs", "peak", "clipped_fraction", "sha256",
]  # fmt: skip

log = logging.getLogger(__name__)

ReasonFn = Callable[[Any], str]  # failing row (a pd.Series; None for table-level checks)


class Problem(NamedTuple):
    """One finding: where (a recording, ``manifest.csv:LINE`` or ``<dataset>``), which check,
    how serious (``error`` or ``warning``, from ``validate.severity``) and why, with the value."""

    path: str
    check: str
    severity: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


def _order(p: Problem) -> tuple:
    return p.severity != "error", p.path == DATASET, p.path, p.check, p.reason


class DataValidationError(ValueError):
    """Raised when validation fails; the message lists every error, then the warnings."""

    def __init__(self, problems: list[Problem], root: str | Path | None = None,
                 report: ValidationReport | None = None):
        self.problems = sorted(problems, key=_order)
        self.report = report
        errors = [p for p in self.problems if p.severity == "error"]
        where = f" in {root}" if root is not None else ""
        n_files = len({p.path for p in errors if p.path != DATASET})
        head = f"data validation failed{where}: {len(errors)} error(s)"
        n_warn = len(self.problems) - len(errors)
        lines = [f"{head}, {n_files} failing file(s)" + (f", and {n_warn} warning(s)" if n_warn else "")]
        lines += [p.line() for p in errors]
        lines += [f"{p.line()} (warning)" for p in self.problems if p.severity != "error"]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- facts


def file_facts(path: str | Path) -> dict[str, Any]:
    """Decode one recording and measure it; a bad file gives readable=False and the reason."""
    try:
        if storage.is_url(path):  # one download serves the decoder and the header check
            blob = audio.fetch(str(path))
            data, sr = audio.decode(blob, str(path))
            head, size = blob[: audio.WAV_HEAD_BYTES], len(blob)
        else:
            data, sr = audio.read(path)
            head, size = audio.head_and_size(path)
    except audio.AudioError as exc:
        return {
            "readable": False,
            "error": exc.reason,
            "truncation": "",
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
        "truncation": audio.wav_truncation(head, size),
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
    facts = facts.assign(truncation=facts["truncation"].fillna("").astype(str))
    return facts.astype(
        {
            "readable": bool,
            "truncation": str,
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
        return [p for p in self.problems if p.severity != "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "policy": self.policy,
            "summary": self.summary,
            "problems": [p._asdict() for p in self.problems],
            "quarantined": list(self.quarantined),
            "facts": _records(self.facts),
        }

    def to_json(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def to_html(self, path: str | Path) -> None:
        from audioflow.validation_html import render_html

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_html(self.to_dict()))

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
    """DataFrame rows as JSON-safe dicts (NA/NaN -> None, numpy scalars -> Python)."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain_json(obj: Any) -> Any:
    """GX's result dicts with anything json cannot write (numpy, NA, sets) made plain."""
    return json.loads(json.dumps(obj, default=lambda v: _plain(v) if not isinstance(v, set | frozenset)
                                 else sorted(v, key=str)))


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    return v


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
    ctx: Any, gx: Any, name: str, df: pd.DataFrame, checks: list[_Check], index_col: str,
    kept: dict[str, Any],
) -> dict[str, _Outcome]:
    """Validate ``df`` against the checks with GX; map each result back to its check.

    The suite and GX's own validation result go into ``kept[name]`` (JSON-ready), for the
    files written beside the report.
    """
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
    kept[name] = {"suite": suite.to_json_dict(), "result": _plain_json(result.to_json_dict())}
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

    checks = [
        _check(cfg, "readable", E.ExpectColumnValuesToBeInSet, lambda r: r["error"] or "unreadable",
              column="readable", value_set=[True]),
        _check(cfg, "truncated", E.ExpectColumnValuesToBeInSet, lambda r: r["truncation"],
              column="truncation", value_set=[""], row_condition=decoded),
        _check(cfg, "channels", E.ExpectColumnValuesToBeBetween,
              lambda r: f"{r['channels']} channels (allowed 1 to {cfg.max_channels})",
              column="channels", min_value=1, max_value=cfg.max_channels, row_condition=decoded),
        _check(cfg, "multichannel", E.ExpectColumnValuesToBeBetween,
              lambda r: f"{r['channels']} channels: mixed down to mono",
              column="channels", max_value=1, row_condition=decoded),
        _check(cfg, "duration", E.ExpectColumnValuesToBeBetween, lambda r: _duration_reason(r, cfg),
              column="duration_s", min_value=cfg.min_duration_s, max_value=cfg.max_duration_s,
              row_condition=decoded),
        _check(cfg, "silence", E.ExpectColumnValuesToBeBetween, lambda r: _silence_reason(r, cfg),
              column="rms_dbfs", min_value=cfg.silence_dbfs, row_condition=decoded),
        _check(cfg, "low_level", E.ExpectColumnValuesToBeBetween,
              lambda r: f"low level: RMS {r['rms_dbfs']:.1f} dBFS (below {cfg.low_level_dbfs:g} dBFS)",
              column="rms_dbfs", min_value=cfg.low_level_dbfs,
              row_condition=decoded & (Column("rms_dbfs") >= cfg.silence_dbfs)),
        _check(cfg, "clipping", E.ExpectColumnValuesToBeBetween,
              lambda r: f"clipped: {r['clipped_fraction']:.1%} of samples at full scale "
              f"(max {cfg.max_clipped_fraction:.1%})",
              column="clipped_fraction", max_value=cfg.max_clipped_fraction,
              row_condition=decoded),
        _check(cfg, "conflict", E.ExpectColumnValuesToBeBetween,
              lambda r: _mislabel_reason(r, table),
              column="content_labels", max_value=1, row_condition=decoded),
        _check(cfg, "duplicate", E.ExpectColumnValuesToBeBetween,
              lambda r: _leak_reason(r, table),
              column="content_split_units", max_value=1, row_condition=decoded),
    ]  # fmt: skip
    if cfg.sample_rates:
        allowed = ", ".join(str(s) for s in sorted(cfg.sample_rates))
        checks.append(
            _check(cfg, "sample_rate", E.ExpectColumnValuesToBeInSet,
                  lambda r: f"sample rate {r['sample_rate']} Hz not in {allowed} Hz (resampled)",
                  column="sample_rate", value_set=sorted(cfg.sample_rates),
                  row_condition=decoded)
        )  # fmt: skip
    if cfg.labels:
        checks.append(
            _check(cfg, "label_allowed", E.ExpectColumnValuesToBeInSet,
                  lambda r: f"label {r['label']!r} not in allowed set {sorted(cfg.labels)}",
                  column="label", value_set=sorted(cfg.labels))
        )  # fmt: skip
    return _in_use(cfg, checks)


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
    """Per label: files listed, usable ones (no error), and how many spellings share its name.

    Counting only usable files tells the user whether a class is still big enough once
    its bad files are left out. Allowed labels with no files at all count 0. ``spellings``:
    labels equal to this one up to case, spaces, '-' and '_' ('Normal', 'normal', 'nor mal').
    """
    labels = sorted(set(table["label"]) | set(cfg.labels))
    listed = table["label"].value_counts()
    usable = table.loc[~table["path"].isin(failing), "label"].value_counts()
    keys = [_label_key(lb) for lb in labels]
    return pd.DataFrame(
        {
            "label": labels,
            "listed": [int(listed.get(lb, 0)) for lb in labels],
            "usable": [int(usable.get(lb, 0)) for lb in labels],
            "spellings": [keys.count(k) for k in keys],
        }
    )


def _label_key(label: str) -> str:
    return "".join(ch for ch in label.casefold() if ch.isalnum())


def _group_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Per group (when groups are used): how many labels its recordings carry, and which."""
    grouped = table[table["group"] != ""].groupby("group")["label"]
    rows = [{"group": g, "n_labels": int(s.nunique()),
             "labels": ", ".join(f"{lb} ({n})" for lb, n in sorted(s.value_counts().items()))}
            for g, s in grouped]
    return pd.DataFrame(rows, columns=["group", "n_labels", "labels"])


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

    def similar(r: pd.Series) -> str:
        same = counts[counts["label"].map(_label_key) == _label_key(r["label"])]
        names = " and ".join(f"{o.label!r} ({o.listed} listed)" for o in same.itertuples())
        return f"labels {names} differ only in case, spaces or punctuation: one class under several names?"

    return _in_use(cfg, [
        _check(cfg, "min_per_class", E.ExpectColumnValuesToBeBetween, few,
               column="usable", min_value=cfg.min_per_class),
        _check(cfg, "n_classes", E.ExpectTableRowCountToBeBetween, n_classes,
               min_value=2, row_condition=Column("usable") > 0),
        _check(cfg, "similar_labels", E.ExpectColumnValuesToBeBetween, similar, column="spellings", max_value=1),
    ])  # fmt: skip


def _group_checks(gx: Any, cfg: ValidateConfig) -> list[_Check]:
    return _in_use(cfg, [_check(
        cfg, "group_labels", gx.expectations.ExpectColumnValuesToBeBetween,
        lambda r: f"group {r['group']!r} has recordings under {r['n_labels']} labels: {r['labels']}",
        column="n_labels", max_value=1)])


def _check(cfg: ValidateConfig, key: str, exp_cls: Any, reason: ReasonFn, **kw: Any) -> _Check:
    """One check: its GX expectation carries the check's name and severity in ``meta``."""
    return _Check(key, exp_cls(meta={"check": key, "severity": cfg.severity_of(key)}, **kw), reason)


def _in_use(cfg: ValidateConfig, checks: list[_Check]) -> list[_Check]:
    """The checks whose severity is not ``off``."""
    return [c for c in checks if cfg.severity_of(c.key) != "off"]


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
    warns = [p for p in problems if p.severity != "error"]
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
