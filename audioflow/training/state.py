"""The training state, explicit: ``PassState`` (one pass's model, optimizer, schedule, gradient
scaler, random generator and batch source), ``TrainState`` (the run around it: its identity,
phase, epochs done, model selection and results) and ``TrainResult``; and the keys that decide
which checkpoint a run may resume (``model_hash``, ``run_key``, ``dataset_fingerprint``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from audioflow.config import Params
from audioflow.evaluation import rows_for
from audioflow.features import Features
from audioflow.training.early_stopping import Selection
from audioflow.training.finetune import _init_weights_hash


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    monitor: str = "loss"
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    refit_history: list[dict] = field(default_factory=list)  # train.refit: its epochs on train + val
    refit_windows: int = 0
    epochs: int = 0  # the schedule's length (train.epochs, or what auto made of it)
    patience: int = 0

    def summary(self) -> dict:
        return {
            "epochs": self.epochs,
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "best_val_" + self.monitor: self.best_metric,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            # train.refit: the exported model trained again on train + val for best_epoch epochs
            "refit_epochs": len(self.refit_history),
            "refit_windows": self.refit_windows,
            "resumed_from_epoch": self.resumed_from_epoch,  # epochs done before a crash (both passes)
            "device": self.device,
            "seconds": round(self.seconds, 2),
        }


def model_hash(params: Params, features: Features) -> str:
    """What a trained model depends on besides the data: model, train and the feature spec.

    The spec comes from the features themselves, not params.yaml, because a front that hands
    train only its own sections (ZenML) must still never resume a checkpoint of other features.
    """
    d = params.to_dict()
    model = {"name": params.model.name, "options": params.model.options}  # not the other models' options
    train = d["train"]
    if params.train.init_from:
        train = train | {"init_weights": _init_weights_hash(params.train.init_from)}
    blob = json.dumps({"model": model, "train": train, "spec": features.spec.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_key(params: Params, features: Features, split_table: pd.DataFrame) -> str:
    """What a resumable checkpoint belongs to: model, train, feature spec, data and split.

    A checkpoint resumes only a run with the same key; fronts that keep checkpoints outside the
    stage folder (the ZenML step, in the artifact store) file them under a hash of it.
    """
    train_rows, val_rows = rows_for(features, split_table, "train"), rows_for(features, split_table, "val")
    split_key = hashlib.sha256(
        json.dumps([sorted(map(str, train_rows)), sorted(map(str, val_rows))]).encode()).hexdigest()[:16]
    return f"{model_hash(params, features)}:{dataset_fingerprint(features)}:{split_key}"


def dataset_fingerprint(features: Features) -> str:
    return json.loads((features.dir / "features.json").read_text())["dataset_fingerprint"]



@dataclass
class PassState:
    """One training pass (the first, or train.refit's): the model and everything that updates
    it, seeded afresh. ``resume.pass_state`` / ``resume.restore_pass`` checkpoint it."""

    model: nn.Module
    forward: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    batches: Callable
    weight: torch.Tensor | None
    rows: np.ndarray
    use_amp: bool
    amp_dtype: torch.dtype
    floor_db: float  # the features' value of silence and padding (random_gain leaves it)
    shape: tuple[int, int]  # a window's log-mel: mel bins, frames
    graphable: bool  # full batches may be replayed as a CUDA graph (``GraphedStep``)
    graph: Callable | None = None  # its ``graph.GraphedStep``, captured at the first full batch that may use it


@dataclass
class TrainState:
    """Everything of a run that a checkpoint carries besides the pass: which run it is (``key``),
    where its checkpoint goes, the phase (``select`` on val, then ``refit`` on train + val), the
    epochs done in that phase, the model selection (best score, patience count, best weights)
    and the result so far (histories, best epoch)."""

    key: str
    ckpt_path: Path
    result: TrainResult
    phase: str = "select"
    epoch: int = 0
    selection: Selection = field(default_factory=Selection)
