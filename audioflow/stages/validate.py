"""validate: check every recording (Great Expectations); the report is published, pass or fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import Stage, atomic_dir, publish, write_params
from audioflow.stages.validated import FACTS

if TYPE_CHECKING:
    from audioflow.config import Params


def validate(params: Params, dataset: Path, out: Path, *, progress: bool = True, publish_to: Path | None = None):
    """Validate; write report.json/.html (and publish them, failed or not); raise if the data fails."""
    from audioflow.manifest import Dataset
    from audioflow.validation import validate as _validate

    report = _validate(Dataset.load(dataset), params.validate_, progress=progress)
    with atomic_dir(out) as tmp:
        report.to_json(tmp / "report.json")
        report.to_html(tmp / "report.html")
        report.facts.to_csv(tmp / FACTS, index=False)
        report.quarantine_table().to_csv(tmp / "quarantine.csv", index=False)
        for name, kept in report.gx.items():  # the Great Expectations suites and GX's own results
            for part in ("suite", "result"):
                (tmp / f"gx_{name}_{part}.json").write_text(json.dumps(kept[part], indent=2) + "\n")
        write_params(params, STAGE, tmp)
    publish(STAGE, out, publish_to)
    report.raise_if_failed()
    return report


def dashboard(out: Path, report, fold: str | None):
    s = report.summary
    return ({"n_files": len(report.facts), "ok": report.ok, "n_errors": s["n_errors"], "n_warnings": s["n_warnings"],
             "n_quarantined": s["n_quarantined"], "n_used": s["n_used"], "policy": report.policy},
            {"validation_report": (out / "report.html").read_text()})


STAGE = Stage("validate", "check every recording (Great Expectations)", validate,
              output="validation", folder="validate", reads=("validate.*",), inputs=("dataset",),
              publishes=(("report.json", "validation_report.json"), ("report.html", "validation_report.html")),
              views=(("validation_report", "html"),), dashboard=dashboard)
