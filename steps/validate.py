from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import params, stage_dir


@step
def validate(dataset: Path, validate_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "validation"], Annotated[HTMLString, "validation_report"],
]:
    """Great Expectations over every recording; fails the run listing every problem."""
    out = stage_dir("validate")
    report = stages.validate(params(validate=validate_cfg), dataset, out, progress=False)
    log_metadata(metadata={"n_files": len(report.facts), "ok": report.ok})
    # featurize and split run after this step (stages.Stage.after): nothing reads unvalidated data.
    return out, HTMLString((out / "report.html").read_text())
