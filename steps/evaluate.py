import json
from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import params, png_html, stage_dir


@step
def evaluate(features: Path, split: Path, trained_model: Path, evaluate_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "evaluation"], Annotated[dict, "metrics"], Annotated[HTMLString, "confusion_matrix"]
]:
    """Test-split metrics and confusion matrix; the quality gate fails the run below it."""
    out = stage_dir("evaluate")
    try:
        metrics = stages.evaluate(params(evaluate=evaluate_cfg), features, split, trained_model, out)
    finally:
        if (out / "metrics.json").exists():  # a failing gate still records what it measured
            _log(json.loads((out / "metrics.json").read_text()))
    return out, metrics, png_html(out / "confusion_matrix.png", "Confusion matrix (test split)")


def _log(metrics: dict) -> None:
    flat = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}
    flat |= {f"f1_{label}": v["f1"] for label, v in metrics["per_class"].items()}
    log_metadata(metadata=flat)
    log_metadata(metadata=flat, run_id_name_or_prefix=get_step_context().pipeline_run.id)
    if get_step_context().model is not None:
        log_metadata(metadata=flat, infer_model=True)
