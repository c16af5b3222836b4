"""split: stratified, group-aware train/val/test split (or the collection's folds, or k folds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow import atomic
from audioflow.stages.base import FOLDS, Stage, atomic_dir, write_params
from audioflow.stages.validated import QUARANTINE, validated

if TYPE_CHECKING:
    from audioflow.config import Params

FOLD_PLAN = "folds.json"  # artifacts/folds/folds.json


def split(params: Params, dataset: Path, validation: Path, out: Path, *, progress: bool = True,
          publish_to: Path | None = None):
    from audioflow import split as _split

    table = _split.split_files(validated(dataset, validation).files, params.split)
    folds = _split.fold_tables(table, params.split) if params.split.strategy == "kfold" else None
    with atomic_dir(out) as tmp:
        _split.save(table, tmp, folds)
        write_params(params, STAGE, tmp)
    return table


def write_fold_plan(split: Path, path: Path) -> None:
    """``artifacts/folds/folds.json``: the folds (none unless kfold) and what each tests.

    The folds' folder exists from the split on, with or without folds, so DVC's evaluate stage
    can depend on it (dvc.yaml: a dependency must exist, and the folds' stages may be none).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    info = json.loads((split / "split.json").read_text()).get("folds", {})
    atomic.write_text(path, json.dumps({"folds": list(info), "counts": info}, indent=2) + "\n")


def dashboard(out: Path, table, fold: str | None):
    from audioflow import split as _split

    return _split.summary(table)["counts"], {}


# Groups and folds arrive through the ingest output; the data keys say which columns they were
# and which collection (the model card reads them from this stage's params.json).
STAGE = Stage("split", "stratified, group-aware train/val/test split", split,
              output="split", folder="split",
              reads=("data.root", "data.group_column", "data.fold_column", "split.*"),
              inputs=("dataset", "validation"),
              dvc={"files": {"validation": QUARANTINE}, "extra_outs": [f"{FOLDS}/{FOLD_PLAN}"]},
              dashboard=dashboard)
