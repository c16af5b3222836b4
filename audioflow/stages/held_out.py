"""Scoring a trained model on a split as the exported model will be scored (the temperature fitted
on val, the operating point), for evaluate and evaluate_fold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.errors import AudioflowError
from audioflow.stages.base import SERVING

if TYPE_CHECKING:
    from audioflow.config import Params


def window_logits(model, feats, table, part: str):
    """(sorted window rows, their logits) of the recordings of one split part."""
    import numpy as np

    from audioflow.evaluation import predict_rows, rows_for

    rows = np.sort(rows_for(feats, table, part))
    return rows, predict_rows(model, feats.array, rows, device=next(model.parameters()).device)


def selected_model(trained_model: Path):
    """The model chosen on val (``checkpoint.SELECTED``): trained on the train split alone, so its
    val predictions are held out even when the exported model was refit on train + val."""
    from audioflow.checkpoint import SELECTED, load_model

    return load_model(trained_model / "model" / SELECTED)[0]


def serving_of(params: Params, feats, table, model) -> dict:
    """What the exported model carries from validation: the temperature (``evaluate.calibrate``)
    and the operating point (``evaluate.positive_labels``), both set on the val recordings by
    ``model``, the one chosen there (``selected_model``; with ``train.refit`` the exported
    model, trained again on train + val for as many epochs, takes them over)."""
    from audioflow import reliability
    from audioflow.evaluation import aggregate_files

    ev = params.evaluate
    rows, logits = window_logits(model, feats, table, "val")
    if not len(rows):
        raise AudioflowError("evaluate: the split has no validation recordings to calibrate on")
    val = aggregate_files(feats, rows, logits)
    temperature = 1.0
    if ev.calibrate:
        windows = reliability.window_recordings(feats.index.set_index("row").loc[rows, "path"])
        temperature = reliability.fit_temperature(logits, windows, reliability.actual_index(val, feats.labels))
        val = aggregate_files(feats, rows, logits / temperature)
    return {"temperature": temperature, "calibrated_on": {"split": "val", "recordings": len(val)},
            "operating_point": reliability.fit_operating_point(feats.labels, ev.positive_labels, val,
                                                               ev.target_recall)}


def groups_of(table, paths) -> list[str]:
    """The group (patient, speaker) of each recording; empty strings without groups."""
    group = dict(zip(table["path"], table["group"]))
    return [group[p] for p in paths]


def test_split_hash(paths) -> str:
    """Names the test recordings: two evaluations with the same hash scored the same ones."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:16]


def score(params: Params, features: Path, split: Path, trained_model: Path, tmp: Path, title: str,
           extra: dict) -> dict:
    """Score the test part of ``split`` per recording as the exported model will (temperature
    fitted on val); write the report, the curves and calibration figures, the uncalibrated
    predictions and ``serving.json`` into ``tmp``."""
    from audioflow import reliability
    from audioflow import split as _split
    from audioflow.checkpoint import load_model
    from audioflow.evaluation import aggregate_files, write_report
    from audioflow.features import Features

    feats = Features.load(features)
    table = _split.load(split)
    model, meta = load_model(trained_model / "model")
    serving = serving_of(params, feats, table, selected_model(trained_model))
    rows, logits = window_logits(model, feats, table, "test")
    t = serving["temperature"]
    preds, raw = aggregate_files(feats, rows, logits / t), aggregate_files(feats, rows, logits)
    ev = params.evaluate
    assessed = reliability.assess(feats.labels, preds, raw, groups_of(table, preds["path"]), t,
                                  serving["operating_point"], tmp, n_resamples=ev.bootstrap, confidence=ev.confidence,
                                  n_bins=ev.calibration_bins, seed=ev.seed, title=title)
    extra = {"split": _split.summary(table)["counts"], "params_hash": meta.params_hash,
             "dataset_fingerprint": meta.dataset_fingerprint, "test_split_hash": test_split_hash(preds["path"])} \
        | extra | assessed
    raw.to_csv(tmp / "predictions_uncalibrated.csv", index=False)
    (tmp / SERVING).write_text(json.dumps(serving, indent=2) + "\n")
    return write_report(preds, feats.labels, tmp, extra=extra, title=title)
