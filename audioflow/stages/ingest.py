"""ingest: find the recordings and their labels (manifest or class folders), hash their content."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import Stage, atomic_dir, write_params

if TYPE_CHECKING:
    from audioflow.config import Params


def ingest(params: Params, out: Path, *, progress: bool = True, publish_to: Path | None = None):
    from audioflow.manifest import ingest as _ingest

    ds = _ingest(params.data, progress=progress)
    with atomic_dir(out) as tmp:
        ds.save(tmp)
        write_params(params, STAGE, tmp)
    return ds


def dashboard(out: Path, ds, fold: str | None):
    return {"n_files": len(ds.files), "labels": ds.labels, "fingerprint": ds.fingerprint}, {}


STAGE = Stage("ingest", "find recordings and labels, hash their content", ingest,
              output="dataset", folder="ingest", reads=("data.*",),
              dvc={"deps": ["${data.root}"]}, dashboard=dashboard)
