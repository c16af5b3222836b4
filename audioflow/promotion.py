"""Honest promotion: is the new model worse than the one in production, on the same recordings?

Both exported ONNX models score the held-out test recordings of this run's split with ONNX
Runtime (as deployed, temperature and all), and a paired bootstrap over the same units as the
test intervals (groups, or recordings) gives an interval for new - production of
``evaluate.promotion_metric``. The new model is promoted unless that interval lies wholly below
zero: it may not be better, but it must not be worse beyond what the test split can tell.

Re-scoring production on this run's test split, instead of reading its own stored figures,
makes the comparison paired even when the data or the split changed; the decision says when
they did (production may then have trained on some of these recordings, which favours it).
The registry itself (ZenML's Model Control Plane) is the caller's: ``steps/publish.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from audioflow import atomic
from audioflow.config import EvaluateConfig

NAMES = {"macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy"}


def score_onnx(model: Path, dataset: Path, split: Path, part: str = "test") -> pd.DataFrame:
    """Per-recording predictions (path, actual, predicted) of an ONNX model on one split part."""
    from audioflow import split as _split
    from audioflow.inference import Predictor
    from audioflow.manifest import Dataset

    ds, table = Dataset.load(dataset), _split.load(split)
    rows = table[table["split"] == part].sort_values("path")
    predictor = Predictor(model)
    predicted = [predictor.predict_file(ds.location(p)).label for p in rows["path"]]
    return pd.DataFrame({"path": rows["path"].to_numpy(), "actual": rows["label"].to_numpy(),
                         "predicted": predicted, "group": rows["group"].to_numpy()})


def _labels(model: Path) -> list[str]:
    from audioflow.inference import Predictor

    return Predictor(model).labels


def decide(cfg: EvaluateConfig, new_model: Path, production_model: Path | None, dataset: Path, split: Path,
           new_info: dict, production_info: dict | None = None) -> dict:
    """The promotion decision and its figures (JSON-ready).

    ``production_info``: None when there is no production version; else its ``version`` and what
    its evaluation recorded (``test_split_hash``, ``dataset_fingerprint``), compared with
    ``new_info`` (this run's metrics) to say whether the figures came from the same recordings.
    ``production_model``: its model.onnx (None if it has none).
    """
    from audioflow import reliability
    from audioflow import split as _split

    metric = cfg.promotion_metric
    base = {"policy": cfg.promotion, "metric": metric}
    if cfg.promotion == "never":
        return base | {"promoted": False, "reason": "evaluate.promotion is never: promote by hand"}
    if cfg.promotion == "always":
        return base | {"promoted": True, "reason": "evaluate.promotion is always: promoted without a comparison"}
    if production_info is None:
        return base | {"promoted": True, "reason": "no production version yet: the first model that passes the "
                                                   "gate is promoted"}
    base |= {"production_version": production_info.get("version")}
    if production_model is None:
        return base | {"promoted": False, "reason": f"production version {production_info.get('version')} has no "
                                                    "ONNX model to compare with; promote by hand"}
    table = _split.load(split)
    if not (table["split"] == "test").any():
        return base | {"promoted": False, "reason": "this split has no test recordings (split.strategy kfold: the "
                                                    "exported model trained on all of them), so nothing can be "
                                                    "compared fairly; promote by hand or set evaluate.promotion: "
                                                    "always"}
    labels, old_labels = _labels(new_model), _labels(production_model)
    if set(labels) != set(old_labels):
        return base | {"promoted": False, "reason": f"production predicts {old_labels}, this model {labels}: not "
                                                    "comparable; promote by hand if the task changed"}
    new = score_onnx(new_model, dataset, split)
    old = score_onnx(production_model, dataset, split)
    pos = {lab: i for i, lab in enumerate(labels)}
    groups = new["group"].tolist()
    paired = reliability.paired_difference(new["actual"].map(pos).to_numpy(), new["predicted"].map(pos).to_numpy(),
                                           old["predicted"].map(pos).to_numpy(), len(labels), metric, groups,
                                           cfg.bootstrap, cfg.confidence, cfg.seed)
    lo, hi = paired["delta_interval"]
    promoted = bool(hi >= 0)
    same_split = (production_info.get("test_split_hash") == new_info.get("test_split_hash")
                  if production_info.get("test_split_hash") else None)
    same_data = (production_info.get("dataset_fingerprint") == new_info.get("dataset_fingerprint")
                 if production_info.get("dataset_fingerprint") else None)
    name = NAMES[metric]
    verdict = ("not worse beyond the interval: promoted" if promoted else
               f"worse: the whole interval is below 0, so production (version {production_info.get('version')}) stays")
    reason = (f"{name} {paired['new']:.3f} vs production {paired['old']:.3f} on the same {len(new)} test "
              f"recordings: difference {paired['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] ({cfg.confidence:.0%} paired "
              f"bootstrap over {paired['n_units']} {paired['unit']}s); {verdict}")
    if same_split is False:
        reason += ("; production was evaluated on another test split and may have trained on some of these "
                   "recordings (which favours it)")
    return base | {"promoted": promoted, "reason": reason, "new": paired["new"], "production": paired["old"],
                   "delta": paired["delta"], "delta_interval": [lo, hi], "new_interval": paired["new_interval"],
                   "production_interval": paired["old_interval"], "unit": paired["unit"], "n_units": paired["n_units"],
                   "resamples": paired["resamples"], "confidence": paired["confidence"], "n_test": len(new),
                   "same_test_split": same_split, "same_data": same_data,
                   "labels_agree": float(np.mean(new["predicted"].to_numpy() == old["predicted"].to_numpy()))}


def card_section(decision: dict) -> str:
    """The model card's promotion section (appended where a registry decided)."""
    head = "## Promotion\n\n"
    state = "Promoted to production." if decision["promoted"] else "Not promoted: production is unchanged."
    return head + f"{state} {decision['reason'].rstrip('.')}.\n"


def write_decision(decision: dict, outputs: Path) -> None:
    """``promotion.json`` beside the published files, and the card's promotion section."""
    outputs.mkdir(parents=True, exist_ok=True)
    atomic.write_text(outputs / "promotion.json", json.dumps(decision, indent=2) + "\n")
    card = outputs / "model_card.md"
    if card.is_file():
        text = card.read_text().split("\n## Promotion\n")[0].rstrip("\n") + "\n\n" + card_section(decision)
        atomic.write_text(card, text)
