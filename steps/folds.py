"""The per-fold steps of split.strategy kfold: one train and one evaluate step per fold, each
cached on its own (the fold is a step parameter, so ZenML keys its cache per fold)."""

import shutil
from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import code_policy, live_metadata, params, png_html, stage_dir, stored_checkpoint


@step(cache_policy=code_policy("train_fold"))
def train_fold(features: Path, split: Path, model_cfg: dict[str, Any], train_cfg: dict[str, Any],
               fold: str) -> tuple[Annotated[Path, "fold_model"], Annotated[HTMLString, "fold_training_curves"]]:
    """Train the model of one fold (tested on that fold, trained on the others); resumable like ``train``."""
    p = params(model=model_cfg, train=train_cfg)
    out = stage_dir(f"train_fold_{fold}")
    result = stages.train_fold(p, features, split, out, fold=fold, progress=False, mirror=stored_checkpoint,
                               on_epoch=live_metadata)
    shutil.rmtree(out / "checkpoint")  # emptied by the finished run: not part of the artifact
    log_metadata(metadata={"fold": fold, **result.summary()})
    return out, png_html(out / "training_curves.png", f"Training curves, fold {fold}")


@step(cache_policy=code_policy("evaluate_fold"))
def evaluate_fold(features: Path, split: Path, fold_model: Path, evaluate_cfg: dict[str, Any],
                  fold: str) -> Annotated[Path, "fold_evaluation"]:
    """One fold's model on the recordings of that fold (the mean over folds is ``evaluate``'s)."""
    out = stage_dir(f"evaluate_fold_{fold}")
    m = stages.evaluate_fold(params(evaluate=evaluate_cfg), features, split, fold_model, out, fold=fold)
    log_metadata(metadata={"fold": fold, **{k: m[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}})
    return out
