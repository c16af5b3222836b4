from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step

from audioflow import stages
from steps._common import code_policy, params, stage_dir


@step(cache_policy=code_policy("featurize"))
def featurize(dataset: Path, validation: Path, features_cfg: dict[str, Any]) -> Annotated[Path, "features"]:
    """Log-mel windows of the recordings validation passed, as a .npy memmap + index (a folder
    artifact, no pickle)."""
    out = stage_dir("features")
    f = stages.featurize(params(features=features_cfg), dataset, validation, out, progress=False)
    log_metadata(metadata={"n_windows": len(f.index), "spec": f.spec.to_dict()})
    return out
