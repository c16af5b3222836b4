from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step

from audioflow import split as split_lib
from audioflow import stages
from steps._common import code_policy, params, stage_dir


@step(cache_policy=code_policy("split"))
def split(dataset: Path, validation: Path, data_cfg: dict[str, Any],
          split_cfg: dict[str, Any]) -> Annotated[Path, "split"]:
    """Stratified, group-aware train/val/test assignment of the recordings validation passed."""
    out = stage_dir("split")
    table = stages.split(params(data=data_cfg, split=split_cfg), dataset, validation, out)
    log_metadata(metadata=split_lib.summary(table)["counts"])
    return out
