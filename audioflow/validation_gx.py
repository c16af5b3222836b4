"""The Great Expectations side of validation: the suites over the facts, label and group
tables, how they run (ephemeral context, pandas data source), and each check's reason text.

Great Expectations is imported inside the functions that need it: it takes seconds to import.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from audioflow.config import ValidateConfig
from audioflow.manifest import Dataset

ReasonFn = Callable[[Any], str]  # failing row (a pd.Series; None for table-level checks)


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


# Clients Great Expectations imports when they are installed (each inside a try, as an optional
# extra: great_expectations/compatibility/) but that validating a pandas table never uses. They
# are here for audioflow's own object-store access; GX importing them cost about 1.5 s of its
# 4-7 s (-X importtime: google.api_core 0.7 s, boto3 0.3, sqlalchemy 0.2, azure.identity 0.15).
_GX_UNUSED_CLIENTS = ("google.api_core", "google.auth", "google.cloud", "google.oauth2", "azure", "boto3",
                      "botocore", "sqlalchemy")


def _import_gx() -> Any:
    """Import great_expectations quietly (its dependencies warn at import time), and as if the
    cloud and SQL clients it would not use here were not installed (a setup GX supports: they
    are its optional extras). A client this process imported already stays as it is; after the
    import, any of them imports normally again (``tests/test_validation.py``)."""
    _quiet_gx_logging()
    first = "great_expectations" not in sys.modules
    hidden = [name for name in _GX_UNUSED_CLIENTS if first and name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))  # None: "import name" raises ImportError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations as gx
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
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
        "the split keeps the copies together (one group)"
    )


def _with_content_columns(facts: pd.DataFrame, ds: Dataset) -> pd.DataFrame:
    """Add group and the duplicate counts that GX judges (decoded files only).

    content_labels: distinct labels among files with this content (>1 = mislabel).
    content_split_units: distinct split units (group, or the file itself when it has
    none) among same-content, same-label files (>1: copies the split keeps together).
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
