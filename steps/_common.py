"""What the steps share: params sections in, stage folders out, metadata and views for the dashboard.

The steps themselves (``steps/stages.py``) are generated from the stage declarations; each one is
``run_step``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zenml import get_step_context, log_metadata
from zenml.config.cache_policy import CachePolicy
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.types import HTMLString, MarkdownString

from audioflow.config import Params, load_params, params_from_dict
from audioflow.stages import STAGES
from audioflow.stages.orchestrated import run_task, view

PARAMS_ENV = "AUDIOFLOW_PARAMS"  # which params.yaml the pipeline was compiled from
CHECKPOINTS = "audioflow-checkpoints"  # under the artifact store's path: where a retried step looks


def params_file() -> Path:
    return Path(os.environ.get(PARAMS_ENV, "params.yaml"))


def params(**sections: dict[str, Any]) -> Params:
    """Params from the sections a step received (the rest keep their defaults)."""
    return params_from_dict(dict(sections), source="step parameters")


def data_fingerprint() -> str:
    """ZenML cache function of the ingest step: the content fingerprint of the recordings.

    ZenML sees artifacts, not files; without this a changed recording would hit the cache.
    """
    from audioflow.manifest import ingest as _ingest

    return _ingest(load_params(params_file()).data, progress=False).fingerprint


def _code_key(stage: str, *more):
    """A ZenML cache function for ``stage``: the digest of the audioflow files it runs
    (``audioflow.stages.code_hash``, the files dvc.yaml lists), then each of ``more``."""

    def key() -> str:
        from audioflow.stages import code_hash

        return ":".join([code_hash(stage), *(f() for f in more)])

    key.__name__ = key.__qualname__ = f"{stage}_code"
    return key


# ZenML hashes a step's own function, not the library it calls: a `<stage>_code` cache function
# for every registered stage puts the stage's code in the key, so a new or fixed audioflow reruns
# what it changes, as `dvc repro` does. Ingest's also fingerprints the recordings' content.
_MORE = {"ingest": (data_fingerprint,)}
for _stage in STAGES:
    globals()[f"{_stage}_code"] = _code_key(_stage, *_MORE.get(_stage, ()))


def code_policy(stage: str) -> CachePolicy:
    """The cache policy of a stage's step: ZenML's default key plus ``<stage>_code()``."""
    return CachePolicy(cache_func=f"steps._common.{stage}_code")


def run_step(name: str, *inputs: Path, fold: str | None = None, folds: list[Path] | None = None, **cfgs: dict):
    """A stage as a ZenML step: its folder (and its views: HTML, Markdown, metrics) as outputs,
    its figures as step metadata. A stage that trains mirrors its checkpoint in the artifact
    store after every epoch, so a retried step (a restarted pod, another machine) resumes where
    the killed one stopped, and logs each epoch while it runs."""
    stage = STAGES[name]
    out = stage_dir(name if fold is None else f"{name}_{fold}")
    views = run_task(name, params(**{k.removesuffix("_cfg"): v for k, v in cfgs.items()}), inputs, out,
                     fold=fold, folds=folds or [], mirror=stored_checkpoint, on_epoch=live_metadata,
                     record=lambda m: _record(m, stage.headline))
    shown = [_view(kind, view(views[v])) for v, kind in stage.views if kind != "roc"]  # ROC: KFP's one curve
    return (out, *shown) if shown else out


def _view(kind: str, content):
    if kind == "markdown":
        return MarkdownString(content)
    if kind == "metrics":
        return content
    return HTMLString(content[0] if kind == "confusion" else content)


def _record(metadata: dict, headline: bool) -> None:
    """Step metadata; a headline also on the pipeline run and the model version (the figures the
    dashboard compares runs and versions by)."""
    log_metadata(metadata=metadata)
    if headline:
        log_metadata(metadata=metadata, run_id_name_or_prefix=get_step_context().pipeline_run.id)
        if get_step_context().model is not None:
            log_metadata(metadata=metadata, infer_model=True)


def live_metadata(row: dict) -> None:
    """One epoch's figures as metadata of the running step: the dashboard shows training's
    progress while it runs (``epoch`` and the latest values; history.csv keeps every epoch)."""
    log_metadata(metadata={k: v for k, v in row.items() if isinstance(v, int | float)})


def stage_dir(stage: str) -> Path:
    """A fresh folder for a stage's outputs, removed when the step ends.

    ZenML archives the returned folder into the artifact store before the step ends; a
    materializer's step-scoped temporary directory is deleted right after that.
    """
    with BaseMaterializer(uri="").get_temporary_directory(delete_at_exit=False) as scratch:
        return Path(scratch) / stage


class _ArtifactStoreFolder:
    """A folder of the active stack's artifact store (its credentials), for ``mirrored_checkpoint``."""

    def __init__(self, key: str):
        from zenml.client import Client

        self.base = f"{str(Client().active_stack.artifact_store.path).rstrip('/')}/{CHECKPOINTS}/{key}"

    def exists(self, name: str) -> bool:
        from zenml.io import fileio

        return fileio.exists(f"{self.base}/{name}")

    def download(self, name: str, local: Path) -> None:
        from zenml.io import fileio

        fileio.copy(f"{self.base}/{name}", str(local), overwrite=True)

    def upload(self, local: Path, name: str) -> None:
        from zenml.io import fileio

        fileio.makedirs(self.base)
        fileio.copy(str(local), f"{self.base}/{name}", overwrite=True)

    def rename(self, src: str, dst: str) -> None:
        from zenml.io import fileio

        fileio.rename(f"{self.base}/{src}", f"{self.base}/{dst}", overwrite=True)

    def remove(self) -> None:
        from zenml.io import fileio

        if fileio.exists(self.base):
            fileio.rmtree(self.base)


def stored_checkpoint(key: str, local: Path):
    """The training checkpoint mirrored in the artifact store (``storage.mirrored_checkpoint``)."""
    from audioflow.storage import mirrored_checkpoint

    return mirrored_checkpoint(_ArtifactStoreFolder(key), local)
