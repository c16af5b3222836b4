from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step
from zenml.config.cache_policy import CachePolicy

from audioflow import stages
from steps._common import params, stage_dir


@step(cache_policy=CachePolicy(cache_func="steps._common.data_fingerprint"))
def ingest(data_cfg: dict[str, Any]) -> Annotated[Path, "dataset"]:
    """Find recordings and labels; hash every file (the cache key includes the content)."""
    out = stage_dir("ingest")
    ds = stages.ingest(params(data=data_cfg), out, progress=False)
    log_metadata(metadata={"n_files": len(ds.files), "labels": ds.labels, "fingerprint": ds.fingerprint})
    return out
