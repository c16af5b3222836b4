"""The plain baseline the defaults must beat: a log-mel CNN of three conv blocks, no
augmentation, no calibration, no early stopping, AdamW with a one-cycle schedule for a fixed
number of epochs. A few lines over the library's own pieces: the ingested and validated
recordings, ``features.featurize`` (plain dB re full scale: ``features.level: absolute``), the
split tables, ``scoring.recording_probabilities``.

It trains on a split's train and val recordings and scores its test recordings, the same ones
the defaults' model is scored on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHANNELS = (32, 64, 128)


class PlainCNN(nn.Module):
    """[batch, n_mels, frames] -> logits: three conv-BN-ReLU-maxpool blocks, global average pool."""

    def __init__(self, n_mels: int, n_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean[:, None])
        self.register_buffer("std", std[:, None])
        layers, c_in = [], 1
        for c in CHANNELS:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.body, self.head = nn.Sequential(*layers), nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(((x - self.mean) / self.std)[:, None]).mean(dim=(2, 3)))


def features(dataset: Path, validation: Path, out: Path, n_mels: int = 64) -> Path:
    """Plain log-mel features of the recordings validation passed (the defaults' window and rate)."""
    from audioflow.config import params_from_yaml
    from audioflow.features import featurize
    from audioflow.stages.validated import validated

    cfg = params_from_yaml("", {"features.level": "absolute", "features.n_mels": n_mels}).features
    featurize(validated(dataset, validation), cfg, out, progress=False)
    return out


def load(features_dir: Path) -> tuple:
    """The features and their log-mel as one float32 tensor, read once for every split."""
    from audioflow.features import Features

    feats = Features.load(features_dir)
    return feats, torch.from_numpy(np.array(feats.array, dtype=np.float32))  # a copy: the memmap is read-only


def train_and_test(loaded: tuple, table, epochs: int = 20, batch_size: int = 32, lr: float = 3e-3,
                   seed: int = 0) -> dict:
    """Train on ``table``'s train + val recordings (``loaded``: what ``load`` returns); accuracy
    and macro-F1 on its test recordings."""
    from sklearn.metrics import f1_score

    from audioflow.scoring import recording_probabilities

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    feats, x = loaded
    part = dict(zip(table["path"], table["split"]))
    idx = feats.index
    where = idx["path"].map(part)
    y = torch.tensor(idx["label"].map({lab: i for i, lab in enumerate(feats.labels)}).to_numpy())
    fit = torch.tensor(where.isin(["train", "val"]).to_numpy())
    test = torch.tensor((where == "test").to_numpy())
    xf, yf = x[fit], y[fit]
    model = PlainCNN(x.shape[1], len(feats.labels), xf.mean(dim=(0, 2)), xf.std(dim=(0, 2)).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = (len(xf) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(xf)).split(batch_size):
            loss = nn.functional.cross_entropy(model(xf[b]), yf[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb in x[test].split(256)]).numpy()
    paths = idx["path"][test.numpy()].to_numpy()
    order = {p: i for i, p in enumerate(dict.fromkeys(paths))}
    probs = recording_probabilities(logits, np.array([order[p] for p in paths]))
    truth = [feats.labels.index(lab) for lab in idx[test.numpy()].drop_duplicates("path")["label"]]
    pred = probs.argmax(axis=1)
    return {"accuracy": float(np.mean(pred == truth)), "macro_f1": float(f1_score(truth, pred, average="macro")),
            "n": len(truth), "seconds": round(time.perf_counter() - t0, 1)}
