from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step

from audioflow import stages
from steps._common import code_policy, params, stage_dir


@step(cache_policy=code_policy("ingest"))
def ingest(data_cfg: dict[str, Any]) -> Annotated[Path, "dataset"]:
    """Find recordings and labels; hash every file (the cache key includes the content and the code)."""
    out = stage_dir("ingest")
    ds = stages.ingest(params(data=data_cfg), out, progress=False)
    log_metadata(metadata={"n_files": len(ds.files), "labels": ds.labels, "fingerprint": ds.fingerprint})
    return out
