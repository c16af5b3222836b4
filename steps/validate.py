from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import params, stage_dir


@step
def validate(dataset: Path, validate_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "validated_dataset"], Annotated[Path, "validation"],
    Annotated[HTMLString, "validation_report"],
]:
    """Great Expectations over every recording; fails the run listing every problem."""
    out = stage_dir("validate")
    report = stages.validate(params(validate=validate_cfg), dataset, out, progress=False)
    log_metadata(metadata={"n_files": len(report.facts), "ok": report.ok})
    # Later steps read the dataset through this step, so nothing runs on unvalidated data.
    return dataset, out, HTMLString((out / "report.html").read_text())
