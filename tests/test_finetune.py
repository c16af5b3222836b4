"""Fine-tuning (train.init_from): pretrain on one task, fine-tune on another with a new label set,
and beat training from scratch on the second task's held-out recordings.

Task A: six tone frequencies in noise (0 dB SNR), plenty of recordings. Task B: three other
frequencies, four training recordings per class at -10 dB SNR. A network that learned on A where
narrow-band energy sits generalizes to B from a handful of examples; one trained from scratch
on those does not, with the same budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audioflow import split as split_mod
from audioflow.checkpoint import load_model
from audioflow.config import load_params
from audioflow.evaluation import file_predictions, rows_for
from audioflow.features import featurize
from audioflow.manifest import ingest
from audioflow.training import FineTuneError, model_hash, train

SR = 8000
TASK_A = {f"a{f}": f for f in (300, 500, 800, 1300, 2000, 3000)}
TASK_B = {"b650": 650, "b1000": 1000, "b1600": 1600}


def signal(freq: float, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """One second of a slightly detuned, amplitude-modulated tone in white noise."""
    t = np.arange(SR) / SR
    f = freq * (1 + 0.03 * rng.standard_normal())
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(1, 4) * t))
    s = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * envelope
    x = s / np.sqrt(np.mean(s**2)) + rng.standard_normal(len(t)) * 10 ** (-snr_db / 20)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def task(root: Path, classes: dict, snr_db: float, seed: int, n_train: int, n_val: int, n_test: int) -> Path:
    rng, rows = np.random.default_rng(seed), []
    for label, freq in classes.items():
        for k in range(n_val + n_train + n_test):
            rel = f"{label}/{k}.wav"
            (root / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, signal(freq, snr_db, rng), SR, subtype="PCM_16")
            rows.append({"path": rel, "label": label,
                         "split": "val" if k < n_val else "train" if k < n_val + n_train else "test"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def prepare(root: Path, **overrides):
    params = load_params("absent.yaml", {
        "data.root": str(root), "data.group_column": None, "data.fold_column": "split",
        "split.strategy": "predefined", "features.window_s": 1.0, "features.n_mels": 32,
        "model.cnn.channels": [8, 16, 32], "train.batch_size": 8, "train.lr": 0.003, "train.patience": 50,
        **overrides})
    ds = ingest(params.data, progress=False)
    feats = featurize(ds, params.features, root.parent / f"{root.name}-features", progress=False)
    return params, feats, split_mod.split_files(ds.files, params.split)


def test_accuracy(feats, table, model_dir: Path) -> float:
    model, _ = load_model(model_dir)
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), torch.device("cpu"))
    return float((preds["actual"] == preds["predicted"]).mean())


test_accuracy.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("finetune")
    params, feats, table = prepare(task(base / "A", TASK_A, 0, 1, 18, 4, 2), **{"train.epochs": 12})
    train(feats, table, params, base / "train-A", progress=False)
    return base / "train-A"


def test_fine_tuning_beats_training_from_scratch(pretrained: Path, tmp_path: Path):
    root = task(tmp_path / "B", TASK_B, -10, 2, 4, 2, 20)
    params, feats, table = prepare(root, **{"train.epochs": 8})
    train(feats, table, params, tmp_path / "scratch", progress=False)
    scratch = test_accuracy(feats, table, tmp_path / "scratch/model")

    tuned_params, *_ = prepare(root, **{"train.epochs": 8, "train.init_from": str(pretrained),
                                        "train.freeze_epochs": 2, "train.backbone_lr_scale": 0.3})
    r = train(feats, table, tuned_params, tmp_path / "tuned", progress=False)
    tuned = test_accuracy(feats, table, tmp_path / "tuned/model")
    # 60 held-out recordings of task B, never seen in either training
    assert tuned >= scratch + 0.1, (tuned, scratch)
    assert [h["backbone_frozen"] for h in r.history] == [True, True] + [False] * 6
    meta = json.loads((tmp_path / "tuned/model/model.json").read_text())
    assert meta["labels"] == sorted(TASK_B)  # a new classifier for the new label set


def test_frozen_backbone_keeps_the_pretrained_weights(pretrained: Path, tmp_path: Path):
    root = task(tmp_path / "B", TASK_B, -10, 3, 4, 2, 2)
    params, feats, table = prepare(root, **{"train.epochs": 2, "train.init_from": str(pretrained / "model"),
                                            "train.freeze_epochs": 2})
    train(feats, table, params, tmp_path / "frozen", progress=False)
    base, _ = load_model(pretrained / "model")
    tuned, _ = load_model(tmp_path / "frozen/model")
    b, t = base.state_dict(), tuned.state_dict()
    for name in b:
        if name in ("mel_mean", "mel_std"):
            assert not torch.equal(b[name], t[name])  # this data's statistics
        elif tuned.is_classifier(name):
            assert b[name].shape != t[name].shape or not torch.equal(b[name], t[name]), name
        else:  # weights and batch-norm statistics of the backbone untouched
            assert torch.equal(b[name], t[name]), name


def test_init_weights_are_part_of_the_run_and_mismatches_are_named(pretrained: Path, tmp_path: Path):
    root = task(tmp_path / "B", TASK_B, -10, 4, 2, 2, 2)
    params, feats, _ = prepare(root, **{"train.init_from": str(pretrained)})
    scratch_params, *_ = prepare(root)
    assert model_hash(params, feats) != model_hash(scratch_params, feats)
    other, feats2, table2 = prepare(root, **{"train.init_from": str(pretrained), "model.cnn.channels": [8, 16]})
    with pytest.raises(FineTuneError, match=r"is a cnn .*channels.*\[8, 16, 32\].*this run trains a cnn"):
        train(feats2, table2, other, tmp_path / "x", progress=False)
    missing, *_ = prepare(root, **{"train.init_from": str(tmp_path)})
    with pytest.raises(FineTuneError, match="no audioflow model here"):
        train(feats2, table2, missing, tmp_path / "y", progress=False)
    # Features on another level scale: the earlier model's weights would read them wrongly.
    louder, feats3, table3 = prepare(root, **{"train.init_from": str(pretrained), "features.level": "absolute"})
    with pytest.raises(FineTuneError, match=r"trained on features.level=peak .*this run's features are level=absolute"):
        train(feats3, table3, louder, tmp_path / "z", progress=False)
