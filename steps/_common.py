"""What the steps share: params sections in, stage folders out, HTML for the dashboard."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zenml.materializers.base_materializer import BaseMaterializer
from zenml.types import HTMLString

from audioflow.config import Params, load_params, params_from_dict

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


def stage_dir(stage: str) -> Path:
    """A fresh folder for a stage's outputs, removed when the step ends.

    ZenML archives the returned folder into the artifact store before the step ends; a
    materializer's step-scoped temporary directory is deleted right after that.
    """
    with BaseMaterializer(uri="").get_temporary_directory(delete_at_exit=False) as scratch:
        return Path(scratch) / stage


def png_html(path: Path, title: str) -> HTMLString:
    """A PNG embedded in HTML, so the dashboard shows it without another materializer."""
    from audioflow.stages import png_page

    return HTMLString(png_page(path, title))


@contextmanager
def stored_checkpoint(key: str, local: Path) -> Iterator[Callable[[Path], None]]:
    """Mirror the training checkpoint ``local/last.pt`` in the active stack's artifact store.

    Before training, the stored copy (if any) is restored, so a step killed mid-training (a
    pod evicted, a machine lost) resumes from its last finished epoch when it runs again.
    The yielded function uploads each new checkpoint (to a partial name, then renamed: a kill
    mid-upload leaves the previous one). A run that finishes removes the stored copy; one
    that fails keeps it.
    """
    from zenml.client import Client
    from zenml.io import fileio

    remote = f"{str(Client().active_stack.artifact_store.path).rstrip('/')}/{CHECKPOINTS}/{key}"
    local.mkdir(parents=True, exist_ok=True)
    if fileio.exists(f"{remote}/last.pt"):
        fileio.copy(f"{remote}/last.pt", str(local / "last.pt"), overwrite=True)

    def upload(path: Path) -> None:
        fileio.makedirs(remote)
        fileio.copy(str(path), f"{remote}/last.pt.partial", overwrite=True)
        fileio.rename(f"{remote}/last.pt.partial", f"{remote}/last.pt", overwrite=True)

    yield upload
    if fileio.exists(remote):
        fileio.rmtree(remote)
