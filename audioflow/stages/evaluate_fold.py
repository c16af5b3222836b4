"""evaluate_fold (split.strategy kfold): one fold's model on the recordings of that fold."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import FOLDS, Stage, atomic_dir, write_params
from audioflow.stages.evaluate import STAGE as EVALUATE
from audioflow.stages.held_out import score

if TYPE_CHECKING:
    from audioflow.config import Params


def evaluate_fold(params: Params, features: Path, split: Path, fold_model: Path, out: Path, *, fold: str,
                  progress: bool = True, publish_to: Path | None = None) -> dict:
    """One fold's model on the recordings of that fold (no gate: ``evaluate`` judges the mean)."""
    from audioflow import split as _split

    with atomic_dir(out) as tmp:
        metrics = score(params, features, _split.fold_dir(split, fold), fold_model, tmp, f"Fold {fold}",
                         {"fold": fold})
        write_params(params, STAGE, tmp)
    return metrics


def dashboard(out: Path, metrics: dict, fold: str | None):
    return {"fold": fold, **{k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}}, {}


STAGE = Stage("evaluate_fold", "kfold: metrics of one fold's model on the recordings of that fold", evaluate_fold,
              output="fold_evaluation", folder=FOLDS + "/{fold}/evaluate", reads=EVALUATE.reads,
              inputs=("features", "split", "fold_model"), per_fold=True, dashboard=dashboard)
