"""train_fold (split.strategy kfold): the model of one fold, trained on the other folds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import FOLDS, Stage, png_page
from audioflow.stages.train import DVC, Mirror, train
from audioflow.stages.train import STAGE as TRAIN

if TYPE_CHECKING:
    from audioflow.config import Params


def train_fold(params: Params, features: Path, split: Path, out: Path, *, fold: str, progress: bool = True,
               publish_to: Path | None = None, mirror: Mirror | None = None,
               on_epoch: Callable[[dict], None] | None = None):
    """``train`` on one fold's split (``split/folds/<fold>``): that fold is its test set."""
    from audioflow import split as _split

    return train(params, features, _split.fold_dir(split, fold), out, progress=progress, mirror=mirror,
                 on_epoch=on_epoch)


def dashboard(out: Path, result, fold: str | None):
    return ({"fold": fold, **result.summary()},
            {"fold_training_curves": lambda: png_page(out / "training_curves.png", f"Training curves, fold {fold}")})


STAGE = Stage("train_fold", "kfold: train the model of one fold (trained on the other folds)", train_fold,
              output="fold_model", folder=FOLDS + "/{fold}/train", reads=TRAIN.reads,
              inputs=("features", "split"), per_fold=True, dvc=DVC, views=(("fold_training_curves", "html"),),
              dashboard=dashboard, model=True, resumable=True, scratch=TRAIN.scratch)
