import json
from pathlib import Path
from typing import Annotated, Any

from zenml import get_step_context, log_metadata, step
from zenml.types import HTMLString, MarkdownString

from audioflow import stages
from steps._common import code_policy, params, png_html, stage_dir


@step(cache_policy=code_policy("evaluate"))
def evaluate(features: Path, split: Path, trained_model: Path, evaluate_cfg: dict[str, Any],
             fold_evaluations: list[Path] = []) -> tuple[  # noqa: B006 (ZenML: a list of artifacts, or none)
    Annotated[Path, "evaluation"], Annotated[dict, "metrics"], Annotated[HTMLString, "confusion_matrix"],
    Annotated[HTMLString, "curves"], Annotated[MarkdownString, "model_card"],
]:
    """Test-split metrics with bootstrap intervals, confusion matrix, ROC/PR curves, calibration and
    the model card (under kfold: the folds' mean and std, from ``fold_evaluations``); the quality
    gate fails the run below it."""
    out = stage_dir("evaluate")
    try:
        metrics = stages.evaluate(params(evaluate=evaluate_cfg), features, split, trained_model, out,
                                  fold_evaluations=fold_evaluations)
    finally:
        if (out / "metrics.json").exists():  # a failing gate still records what it measured
            _log(json.loads((out / "metrics.json").read_text()))
    title = "Confusion matrix (test split)"
    curves = HTMLString(png_html(out / "curves.png", "ROC and precision-recall, one class vs rest")
                        + png_html(out / "reliability.png", "Reliability (calibration)"))
    card = MarkdownString((out / "model_card.md").read_text())
    if (out / "folds.png").exists():
        title = "Confusion matrix (every recording, by the model of the fold that held it out)"
        return out, metrics, HTMLString(png_html(out / "folds.png", "Cross-validation: each fold")
                                        + png_html(out / "confusion_matrix.png", title)), curves, card
    return out, metrics, png_html(out / "confusion_matrix.png", title), curves, card


def _log(metrics: dict) -> None:
    flat = stages.headline_metrics(metrics)
    log_metadata(metadata=flat)
    log_metadata(metadata=flat, run_id_name_or_prefix=get_step_context().pipeline_run.id)
    if get_step_context().model is not None:
        log_metadata(metadata=flat, infer_model=True)
