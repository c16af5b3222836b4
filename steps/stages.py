"""The ZenML steps, one per stage.

Generated from the stage declarations (audioflow/stages/) by

    uv run python -m audioflow.stages.generate --write

Do not edit by hand: change a stage's declaration, then run that (tests/test_stage_contract.py
fails while this file differs from what it writes).
"""

from pathlib import Path
from typing import Annotated, Any

from zenml import step
from zenml.types import HTMLString, MarkdownString

from steps._common import code_policy, run_step

__all__ = ["ingest", "validate", "featurize", "split", "train_fold", "evaluate_fold", "train", "evaluate", "export"]


@step(cache_policy=code_policy("ingest"))
def ingest(
    data_cfg: dict[str, Any],
) -> Annotated[Path, "dataset"]:
    """find recordings and labels, hash their content."""
    return run_step("ingest", data_cfg=data_cfg)


@step(cache_policy=code_policy("validate"))
def validate(
    dataset: Path,
    validate_cfg: dict[str, Any],
) -> tuple[
    Annotated[Path, "validation"],
    Annotated[HTMLString, "validation_report"],
]:
    """check every recording (Great Expectations)."""
    validation, validation_report = run_step("validate", dataset, validate_cfg=validate_cfg)
    return validation, validation_report


@step(cache_policy=code_policy("featurize"))
def featurize(
    dataset: Path,
    validation: Path,
    features_cfg: dict[str, Any],
) -> Annotated[Path, "features"]:
    """decode, resample, window and compute log-mel features."""
    return run_step("featurize", dataset, validation, features_cfg=features_cfg)


@step(cache_policy=code_policy("split"))
def split(
    dataset: Path,
    validation: Path,
    data_cfg: dict[str, Any],
    split_cfg: dict[str, Any],
) -> Annotated[Path, "split"]:
    """stratified, group-aware train/val/test split."""
    return run_step("split", dataset, validation, data_cfg=data_cfg, split_cfg=split_cfg)


@step(cache_policy=code_policy("train_fold"))
def train_fold(
    features: Path,
    split: Path,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    fold: str,
) -> tuple[
    Annotated[Path, "fold_model"],
    Annotated[HTMLString, "fold_training_curves"],
]:
    """kfold: train the model of one fold (trained on the other folds)."""
    fold_model, fold_training_curves = run_step(
        "train_fold",
        features,
        split,
        fold=fold,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
    )
    return fold_model, fold_training_curves


@step(cache_policy=code_policy("evaluate_fold"))
def evaluate_fold(
    features: Path,
    split: Path,
    fold_model: Path,
    evaluate_cfg: dict[str, Any],
    fold: str,
) -> Annotated[Path, "fold_evaluation"]:
    """kfold: metrics of one fold's model on the recordings of that fold."""
    return run_step("evaluate_fold", features, split, fold_model, fold=fold, evaluate_cfg=evaluate_cfg)


@step(cache_policy=code_policy("train"))
def train(
    features: Path,
    split: Path,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
) -> tuple[
    Annotated[Path, "trained_model"],
    Annotated[HTMLString, "training_curves"],
]:
    """train the model, keep the best checkpoint (resumes after a crash)."""
    trained_model, training_curves = run_step("train", features, split, model_cfg=model_cfg, train_cfg=train_cfg)
    return trained_model, training_curves


@step(cache_policy=code_policy("evaluate"))
def evaluate(
    features: Path,
    split: Path,
    trained_model: Path,
    evaluate_cfg: dict[str, Any],
    fold_evaluations: list[Path] = [],  # noqa: B006 (ZenML: a list of artifacts, or none)
) -> tuple[
    Annotated[Path, "evaluation"],
    Annotated[dict, "metrics"],
    Annotated[HTMLString, "confusion_matrix"],
    Annotated[HTMLString, "curves"],
    Annotated[MarkdownString, "model_card"],
]:
    """test-set metrics with bootstrap intervals (under kfold: every fold's, mean and std), confusion matrix,
    ROC and precision-recall curves, calibration (temperature fitted on val), the operating point, predictions,
    the model card."""
    evaluation, metrics, confusion_matrix, curves, model_card = run_step(
        "evaluate",
        features,
        split,
        trained_model,
        folds=fold_evaluations,
        evaluate_cfg=evaluate_cfg,
    )
    return evaluation, metrics, confusion_matrix, curves, model_card


@step(cache_policy=code_policy("export"))
def export(
    trained_model: Path,
    dataset: Path,
    split: Path,
    evaluation: Path,
    export_cfg: dict[str, Any],
) -> Annotated[Path, "onnx_model"]:
    """ONNX export (waveform in, calibrated logits out) with a parity check."""
    return run_step("export", trained_model, dataset, split, evaluation, export_cfg=export_cfg)
