"""train: the model, its best checkpoint, its history; resumes after a crash, from a checkpoint
kept in its folder and, when a front gives one, mirrored in object storage.

Every front trains through ``train`` here: the CLI and DVC (checkpoint in the stage folder),
ZenML (mirrored in the artifact store) and KFP (mirrored under ``checkpoint_root``) differ
only in the ``mirror`` they pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.stages.base import Stage, png_page, write_params

if TYPE_CHECKING:
    from audioflow.config import Params

LIVE = "live"  # the DVCLive folder in a train stage folder
CHECKPOINT = "checkpoint"  # the resumable checkpoint's folder in a train stage folder
# mirror(key, local folder) -> a context giving ``upload(path)`` (or None): see storage.mirrored_checkpoint
Mirror = Callable[[str, Path], AbstractContextManager]


def _key(params: Params, feats, table) -> str:
    """A short name for the training run a checkpoint can resume (``training.run_key``)."""
    from audioflow.training import run_key

    return hashlib.sha256(run_key(params, feats, table).encode()).hexdigest()[:24]


def checkpoint_key(params: Params, features: Path, split: Path) -> str:
    """``_key`` of a features and a split folder: where a mirrored checkpoint of this run lives."""
    from audioflow import split as _split
    from audioflow.features import Features

    return _key(params, Features.load(features), _split.load(split))


def train(params: Params, features: Path, split: Path, out: Path, *, progress: bool = True,
          publish_to: Path | None = None, mirror: Mirror | None = None,
          on_epoch: Callable[[dict], None] | None = None):
    """Train into ``out`` (which keeps a resumable checkpoint, ``checkpoint/last.pt``, across crashes).

    The best weights go to ``out/model``. ``mirror(key, out/checkpoint)`` keeps the checkpoint
    somewhere a retried run on another machine finds it (``key`` names this run: model, train,
    feature spec, data and split); ``on_epoch(row)`` runs after every epoch. Every epoch's
    figures also go to ``out/live`` with DVCLive while training runs (``metrics.json``, and a
    TSV per metric under ``plots/``), where `dvc exp show` and `dvc plots` read them.
    """
    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import train as _train

    feats, table = Features.load(features), _split.load(split)  # once: the key and the training
    stored = mirror(_key(params, feats, table), out / CHECKPOINT) if mirror is not None else nullcontext(None)
    with stored as upload, live_log(out / LIVE) as log:
        def each_epoch(row: dict) -> None:
            log(row)
            if on_epoch is not None:
                on_epoch(row)

        result = _train(feats, table, params, out, progress=progress, on_checkpoint=upload, on_epoch=each_epoch)
    write_params(params, STAGE, out)
    return result


def folder_mirror(root: str, run: str) -> Mirror | None:
    """Checkpoints mirrored under ``<root>/<run>/<key>`` (object storage, a folder: anything
    fsspec opens), where a retry of the same run finds them; None for an empty ``root``."""
    if not root:
        return None

    def mirror(key: str, local: Path):
        from audioflow.storage import FsspecFolder, mirrored_checkpoint

        return mirrored_checkpoint(FsspecFolder(f"{root.rstrip('/')}/{run}/{key}"), local)

    return mirror


@contextmanager
def live_log(folder: Path) -> Iterator[Callable[[dict], None]]:
    """A function that logs one epoch's figures with DVCLive into ``folder`` (started afresh;
    a resumed run replays its earlier epochs). Without DVCLive (no dvc extra) it does nothing."""
    try:
        from dvclive import Live
    except ImportError:
        yield lambda row: None
        return

    class FilesOnly(Live):
        # Only the files: dvc.yaml declares them, and DVCLive makes no experiment of its own.
        # (Its repository probe also fails in a git repository without a commit, DVCLive 3.49.)
        def _init_dvc(self) -> None:
            pass

    live = FilesOnly(dir=str(folder), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(row: dict) -> None:
        live.step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                live.log_metric(key, value)
        live.make_summary()

    try:
        yield log
    finally:
        live.end()


# What `dvc repro` keeps of a train folder: each file (the checkpoint folder persists, uncached,
# so a crashed `dvc repro` resumes; a finished run deletes it), DVCLive's figures as metrics
# (`dvc exp show` shows a running experiment's progress), and what later stages read: the model.
TRAIN_OUTS = ("model", "history.csv", "training_curves.png", "train.json", "params.json", f"{LIVE}/plots")
DVC = {"outs": TRAIN_OUTS, "persist": CHECKPOINT, "metrics": f"{LIVE}/metrics.json", "consumed": "model"}


def dashboard(out: Path, result, fold: str | None):
    return result.summary(), {"training_curves": lambda: png_page(out / "training_curves.png", "Training curves")}


# An orchestrator stores the folder without the checkpoint, which a finished run leaves empty.
STAGE = Stage("train", "train the model, keep the best checkpoint (resumes after a crash)", train,
              output="trained_model", folder="train", reads=("model.*", "train.*"),
              inputs=("features", "split"), dvc=DVC, views=(("training_curves", "html"),), dashboard=dashboard,
              model=True, resumable=True, scratch=(CHECKPOINT,))
