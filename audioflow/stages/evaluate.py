"""evaluate: test-set metrics with intervals, curves, calibration and the operating point, the
model card (under kfold: every fold's and their mean); and the summaries dashboards show of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.errors import AudioflowError
from audioflow.stages.base import SERVING, Stage, atomic_dir, png_page, publish, write_params
from audioflow.stages.held_out import groups_of, score, selected_model, serving_of, test_split_hash

if TYPE_CHECKING:
    from audioflow.config import Params

EVALUATION_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv",
                    "curves.png", "reliability.png", "model_card.md")


class QualityGateError(AudioflowError, RuntimeError):
    pass


def _cross_validation(params: Params, features: Path, split: Path, trained_model: Path, folds: dict[str, Path],
                      tmp: Path) -> dict:
    """The folds' report (``evaluation.cross_validation_report``), plus intervals, curves and
    calibration of every recording's out-of-fold prediction (each fold's model with its own
    temperature and threshold), and ``serving.json`` of the final model (its val split)."""
    import pandas as pd

    from audioflow import reliability
    from audioflow import split as _split
    from audioflow.evaluation import cross_validation_report
    from audioflow.features import Features

    table = _split.load(split)
    metrics = cross_validation_report(folds, tmp, extra={"split": _split.summary(table)["counts"]})
    feats = Features.load(features)
    serving = serving_of(params, feats, table, selected_model(trained_model))
    read = {"dtype": {"path": str, "actual": str, "predicted": str}, "keep_default_na": False}
    pooled = pd.read_csv(tmp / "predictions.csv", **read)
    raw = pd.concat([pd.read_csv(f / "predictions_uncalibrated.csv", **read) for f in folds.values()],
                    ignore_index=True)
    by_fold = {name: json.loads((f / SERVING).read_text()) for name, f in folds.items()}
    op = serving["operating_point"]
    thresholds = None
    if op is not None:  # each recording judged at the threshold of the model that held it out
        thresholds = pooled["fold"].astype(str).map({n: s["operating_point"]["threshold"]
                                                     for n, s in by_fold.items()}).to_numpy(dtype=float)
    ev = params.evaluate
    assessed = reliability.assess(feats.labels, pooled.drop(columns="fold"), raw, groups_of(table, pooled["path"]),
                                  serving["temperature"], op, tmp, n_resamples=ev.bootstrap,
                                  confidence=ev.confidence, n_bins=ev.calibration_bins, seed=ev.seed,
                                  title=f"Out of fold ({len(folds)} folds)", thresholds=thresholds)
    assessed["calibration"]["fold_temperatures"] = {n: s["temperature"] for n, s in by_fold.items()}
    if op is not None:
        assessed["operating_point"]["fold_thresholds"] = {n: s["operating_point"]["threshold"]
                                                          for n, s in by_fold.items()}
    metrics |= assessed | {"test_split_hash": test_split_hash(pooled["path"])}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / SERVING).write_text(json.dumps(serving, indent=2) + "\n")
    return metrics


def evaluate(params: Params, features: Path, split: Path, trained_model: Path, out: Path, *,
             progress: bool = True, publish_to: Path | None = None,
             fold_evaluations: Sequence[Path] = ()) -> dict:
    """Score the test split per recording; write metrics with bootstrap intervals, confusion
    matrix, curves, calibration, the operating point, predictions and the model card.

    The model is scored as it will be served: the temperature fitted on val divides its logits
    (``serving.json`` hands it, and the operating point, to export). Under kfold
    (``fold_evaluations``: every fold's ``evaluate_fold`` folder, in ``split.folds`` order) the
    figures are the folds': mean and standard deviation of every metric, each fold's, and the
    confusion matrix, predictions, intervals and curves of every recording from the fold that
    held it out. The outputs are written before the quality gate judges them, so a run that
    fails the gate still shows what it measured (in ``out``; only a model that passes is
    published).
    """
    from audioflow import split as _split
    from audioflow.model_card import write_model_card

    folds = _split.fold_names(split)
    # Each fold's evaluation names its fold (metrics.json), whatever folder it is in.
    given = {json.loads((Path(f) / "metrics.json").read_text())["fold"]: Path(f) for f in fold_evaluations}
    if sorted(given) != sorted(folds):
        raise AudioflowError(f"evaluate: the split has folds {folds} but evaluations of folds {sorted(given)} "
                             "were given: run evaluate_fold for each of split.folds first")
    with atomic_dir(out) as tmp:
        if folds:
            metrics = _cross_validation(params, features, split, trained_model, {f: given[f] for f in folds}, tmp)
        else:
            metrics = score(params, features, split, trained_model, tmp, "Test set", {})
        write_params(params, STAGE, tmp)
        write_model_card(tmp / "model_card.md", tmp, split, trained_model)
    gate = params.evaluate.min_macro_f1
    if metrics["macro_f1"] < gate:
        what = f"mean macro-F1 over {len(folds)} folds" if folds else "test macro-F1"
        raise QualityGateError(
            f"{what} {metrics['macro_f1']:.4f} is below evaluate.min_macro_f1={gate}: "
            f"the model is not promoted (see {out / 'confusion_matrix.png'})"
        )
    publish(STAGE, out, publish_to)
    return metrics


def confusion_counts(evaluation: Path) -> tuple[list[str], list[list[int]]]:
    """Labels and the confusion matrix (rows = actual) that ``evaluate`` wrote."""
    import pandas as pd

    cm = pd.read_csv(evaluation / "confusion_matrix.csv", index_col=0)
    return [str(c) for c in cm.columns], cm.to_numpy().astype(int).tolist()


def headline_metrics(metrics: dict) -> dict[str, float | int | str]:
    """The figures a dashboard shows, flat: scores and their interval bounds, per-class F1, macro
    AUC/AP, calibration, the operating point, what identifies the test split (ZenML metadata,
    KFP Metrics)."""
    flat: dict = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}
    if "std" in metrics:  # kfold: the spread over folds, and each fold
        flat |= {f"{k}_std": metrics["std"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        flat |= {f"macro_f1_fold_{f}": m["macro_f1"] for f, m in metrics["folds"].items()}
    flat |= {f"f1_{label}": v["f1"] for label, v in metrics["per_class"].items()}
    intervals = metrics.get("intervals") or {}
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        for end in ("low", "high"):
            if (intervals.get(key) or {}).get(end) is not None:
                flat[f"{key}_{end}"] = intervals[key][end]
    for key in ("auc", "average_precision"):
        if (metrics.get(key) or {}).get("macro") is not None:
            flat[f"macro_{key}"] = metrics[key]["macro"]
    if cal := metrics.get("calibration"):
        flat |= {"temperature": cal["temperature"], "ece": cal["ece"], "ece_uncalibrated": cal["ece_uncalibrated"]}
    if op := metrics.get("operating_point"):
        flat["operating_threshold"] = op["threshold"]
        flat |= {f"operating_{k}": op["test"][k] for k in ("recall", "specificity") if op["test"][k] is not None}
    return flat | {k: metrics[k] for k in ("test_split_hash", "dataset_fingerprint") if k in metrics}


def summary_roc(evaluation: Path) -> tuple[list[float], list[float], list[float], str]:
    """One ROC curve for dashboards that hold one (KFP's ClassificationMetrics): the operating
    point's positive classes against the rest where one is set, else the micro-average of every
    class against the rest. (fpr, tpr, threshold, what it is)."""
    import numpy as np
    import pandas as pd

    from audioflow import reliability

    metrics = json.loads((evaluation / "metrics.json").read_text())
    labels = list(metrics["per_class"])
    preds = pd.read_csv(evaluation / "predictions.csv", dtype={"path": str, "actual": str, "predicted": str},
                        keep_default_na=False)
    probs = reliability.probabilities(preds, labels)
    if op := metrics.get("operating_point"):
        positive = [labels.index(lab) for lab in op["positive_labels"]]
        y, score = preds["actual"].isin(op["positive_labels"]).to_numpy(), reliability.positive_score(probs, positive)
        what = f"{' + '.join(op['positive_labels'])} against the rest"
    else:
        y = (reliability.actual_index(preds, labels)[:, None] == np.arange(len(labels))[None, :]).ravel()
        score, what = probs.ravel(), "micro-average of every class against the rest"
    roc = reliability.pooled_roc(y, score) or {"fpr": [], "tpr": [], "threshold": []}
    return roc["fpr"], roc["tpr"], roc["threshold"], what


def dashboard(out: Path, result: dict | None, fold: str | None):
    """From the folder alone: a failed quality gate leaves it written (``result`` None)."""
    flat = headline_metrics(json.loads((out / "metrics.json").read_text()))
    title = "Confusion matrix (test split)"
    html = ""
    if (out / "folds.png").exists():  # kfold
        title = "Confusion matrix (every recording, by the model of the fold that held it out)"
        html = png_page(out / "folds.png", "Cross-validation: each fold")
    return flat, {
        "metrics": {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)},
        "confusion_matrix": lambda: (html + png_page(out / "confusion_matrix.png", title), *confusion_counts(out)),
        "roc_curve": lambda: summary_roc(out),
        "curves": lambda: (png_page(out / "curves.png", "ROC and precision-recall, one class vs rest")
                           + png_page(out / "reliability.png", "Reliability (calibration)")),
        "model_card": lambda: (out / "model_card.md").read_text(),
    }


# Every evaluate key: promotion and promotion_metric too, which ZenML's publish step reads from
# this stage's params.json, and intended_use, which the model card writes.
STAGE = Stage("evaluate", "test-set metrics with bootstrap intervals (under kfold: every fold's, mean and std), "
              "confusion matrix, ROC and precision-recall curves, calibration (temperature fitted on val), the "
              "operating point, predictions, the model card", evaluate,
              output="evaluation", folder="evaluate", reads=("evaluate.*",),
              inputs=("features", "split", "trained_model"), publishes=tuple((f, f) for f in EVALUATION_FILES),
              reads_folds="fold_evaluation", dashboard=dashboard, headline=True,
              views=(("metrics", "metrics"), ("confusion_matrix", "confusion"), ("roc_curve", "roc"),
                     ("curves", "html"), ("model_card", "markdown")))
