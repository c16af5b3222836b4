from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import code_policy, params, stage_dir


@step(cache_policy=code_policy("validate"))
def validate(dataset: Path, validate_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "validation"], Annotated[HTMLString, "validation_report"],
]:
    """The manifest, every recording and the classes in one pass (Great Expectations); fails the
    run listing every error, or (validate.on_error: quarantine) leaves the recordings with errors out."""
    out = stage_dir("validate")
    report = stages.validate(params(validate=validate_cfg), dataset, out, progress=False)
    s = report.summary
    log_metadata(metadata={"n_files": len(report.facts), "ok": report.ok, "n_errors": s["n_errors"],
                           "n_warnings": s["n_warnings"], "n_quarantined": s["n_quarantined"],
                           "n_used": s["n_used"], "policy": report.policy})
    # featurize and split read this step's folder: they leave out what it quarantined.
    return out, HTMLString((out / "report.html").read_text())
