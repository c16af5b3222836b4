import shutil
from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import params, png_html, stage_dir

CHECKPOINTS = Path(".audioflow/checkpoints")  # outlives a crashed run, so the next one resumes


@step
def train(features: Path, split: Path, model_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "trained_model"], Annotated[HTMLString, "training_curves"]
]:
    """Train; the best checkpoint (safetensors + JSON) and the curves are the outputs."""
    p = params(model=model_cfg, train=train_cfg)
    work = CHECKPOINTS / p.section_hash("model", "train")
    result = stages.train(p, features, split, work, progress=False)
    out = stage_dir("train")
    shutil.copytree(work, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint"))
    log_metadata(metadata=result.summary())
    return out, png_html(out / "training_curves.png", "Training curves")
