import shutil
from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.types import HTMLString

from audioflow import stages
from steps._common import code_policy, live_metadata, params, png_html, stage_dir, stored_checkpoint


@step(cache_policy=code_policy("train"))
def train(features: Path, split: Path, model_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> tuple[
    Annotated[Path, "trained_model"], Annotated[HTMLString, "training_curves"]
]:
    """Train; the best checkpoint (safetensors + JSON) and the curves are the outputs.

    The resume checkpoint lives in the artifact store after every epoch, so a retried step (a
    restarted pod, another machine) resumes where the killed one stopped.
    """
    p = params(model=model_cfg, train=train_cfg)
    out = stage_dir("train")
    result = stages.train(p, features, split, out, progress=False, mirror=stored_checkpoint, on_epoch=live_metadata)
    shutil.rmtree(out / "checkpoint")  # emptied by the finished run: not part of the artifact
    log_metadata(metadata=result.summary())
    return out, png_html(out / "training_curves.png", "Training curves")
