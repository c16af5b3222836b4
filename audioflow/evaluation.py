"""Per-recording predictions, metrics, the confusion matrix (CSV + PNG) and ``metrics.json``.

Training uses the same prediction helpers for validation, so val and test are scored alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from torch import nn

from audioflow.features import Features
from audioflow.scoring import recording_probabilities

CHUNK = 256  # windows per forward pass when predicting


def rows_for(features: Features, split_table: pd.DataFrame, name: str) -> np.ndarray:
    """Window rows whose recording is in split ``name``."""
    paths = set(split_table.loc[split_table["split"] == name, "path"])
    return features.index.loc[features.index["path"].isin(paths), "row"].to_numpy()


@torch.no_grad()
def predict_rows(model: nn.Module, arr: np.ndarray, rows: np.ndarray, device: torch.device) -> np.ndarray:
    """Logits [len(rows), n_classes] for the given window rows, in the given order."""
    model.eval()
    out = []
    for i in range(0, len(rows), CHUNK):
        x = torch.from_numpy(np.asarray(arr[rows[i : i + CHUNK]], dtype=np.float32)).to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def file_predictions(
    model: nn.Module, features: Features, rows: np.ndarray, device: torch.device
) -> pd.DataFrame:
    """Per-recording predictions: window softmax averaged over each file's windows."""
    rows = np.sort(rows)
    return aggregate_files(features, rows, predict_rows(model, features.array, rows, device))


def aggregate_files(features: Features, rows: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    """Window logits of sorted ``rows`` -> one row per recording (path, actual, predicted, p_*)."""
    labels = features.labels
    idx = features.index.set_index("row").loc[rows]
    recording, paths = pd.factorize(idx["path"].to_numpy(), sort=True)
    # The softmax stays in the logits' own dtype (float32), as when torch computed it here.
    probs = recording_probabilities(logits, recording, dtype=np.asarray(logits).dtype)
    first = np.unique(recording, return_index=True)[1]
    per_file = pd.DataFrame({"path": np.asarray(paths, dtype=object), "actual": idx["label"].to_numpy()[first],
                             "predicted": [labels[i] for i in probs.argmax(1)]})
    return pd.concat([per_file, pd.DataFrame(probs, columns=[f"p_{lab}" for lab in labels])], axis=1)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and per-class precision/recall/F1/support.

    ``y_true``/``y_pred`` are integer class indices into ``labels``.
    """
    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
    }


def confusion_table(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> pd.DataFrame:
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
    return pd.DataFrame(cm, index=pd.Index(labels, name="actual"), columns=labels)


def plot_confusion(cm: pd.DataFrame, path: str | Path, title: str = "Confusion matrix") -> None:
    """Counts and row-normalised rates side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = cm.to_numpy()
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    labels = list(cm.columns)
    size = max(4.5, 0.55 * len(labels) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for ax, data, fmt, name in ((axes[0], counts, "d", "counts"), (axes[1], rates, ".2f", "row-normalised")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{title} ({name})")
        thresh = data.max() / 2 if data.max() > 0 else 0.5
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > thresh else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    predictions: pd.DataFrame, labels: list[str], out_dir: str | Path, extra: dict | None = None,
    title: str = "Test set", metrics: dict | None = None,
) -> dict:
    """From per-file predictions (columns path, actual, predicted, p_<label>...) write
    metrics.json (``metrics``, or those of the predictions), confusion_matrix.csv/.png and
    predictions.csv; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pos = {lab: i for i, lab in enumerate(labels)}
    y_true = predictions["actual"].map(pos).to_numpy()
    y_pred = predictions["predicted"].map(pos).to_numpy()
    metrics = dict(metrics or classification_metrics(y_true, y_pred, labels))
    metrics.update(extra or {})
    cm = confusion_table(y_true, y_pred, labels)
    cm.to_csv(out / "confusion_matrix.csv")
    plot_confusion(cm, out / "confusion_matrix.png", title=title)
    predictions.to_csv(out / "predictions.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


SCORES = ("accuracy", "balanced_accuracy", "macro_f1")
CLASS_SCORES = ("precision", "recall", "f1")


def _mean_std(values: list[float]) -> tuple[float, float]:
    # The sample standard deviation (ddof=1): the spread one would see over other folds.
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def cross_validation_report(folds: dict[str, Path], out_dir: str | Path, extra: dict | None = None) -> dict:
    """k-fold evaluation from each fold's ``evaluate_fold`` folder (``{fold: folder}``).

    ``metrics.json``: every metric as the mean over folds (so a gate or a summary reads it like
    a test-split figure), its standard deviation in ``std``, each fold's figures in ``folds``
    and those of all recordings pooled in ``pooled``. ``predictions.csv`` holds every recording
    once, predicted by the model that never saw it (with its ``fold``), and the confusion
    matrix counts those predictions.
    """
    per_fold = {name: json.loads((Path(f) / "metrics.json").read_text()) for name, f in folds.items()}
    labels = list(next(iter(per_fold.values()))["per_class"])
    preds = pd.concat([pd.read_csv(Path(f) / "predictions.csv", dtype={"path": str, "actual": str,
                                                                        "predicted": str}).assign(fold=name)
                       for name, f in folds.items()], ignore_index=True)
    pos = {lab: i for i, lab in enumerate(labels)}
    pooled = classification_metrics(preds["actual"].map(pos).to_numpy(), preds["predicted"].map(pos).to_numpy(),
                                    labels)
    metrics: dict = {"n": int(len(preds)), "std": {}, "per_class": {}}
    for key in SCORES:
        metrics[key], metrics["std"][key] = _mean_std([m[key] for m in per_fold.values()])
    metrics["std"]["per_class"] = {}
    for lab in labels:
        mean, std = {}, {}
        for key in CLASS_SCORES:
            mean[key], std[key] = _mean_std([m["per_class"][lab][key] for m in per_fold.values()])
        metrics["per_class"][lab] = mean | {"support": sum(m["per_class"][lab]["support"] for m in per_fold.values())}
        metrics["std"]["per_class"][lab] = std
    metrics["folds"] = {name: {k: m[k] for k in ("n", *SCORES)} for name, m in per_fold.items()}
    metrics["pooled"] = {k: pooled[k] for k in SCORES}
    first = next(iter(per_fold.values()))
    metrics["cross_validation"] = {"k": len(folds), "folds": list(folds),
                                   "split": {name: m["split"] for name, m in per_fold.items()}}
    metrics |= {k: first[k] for k in ("params_hash", "dataset_fingerprint") if k in first} | (extra or {})
    plot_folds(metrics, Path(out_dir) / "folds.png")
    return write_report(preds, labels, out_dir, title=f"Out of fold ({len(folds)} folds)", metrics=metrics)


def plot_folds(metrics: dict, path: str | Path) -> None:
    """Each fold's accuracy, balanced accuracy and macro-F1, with the mean and +/- one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = list(metrics["folds"])
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    for i, key in enumerate(SCORES):
        ys = [metrics["folds"][f][key] for f in folds]
        xs = np.full(len(ys), i) + np.linspace(-0.25, 0.25, len(ys))
        ax.scatter(xs, ys, s=22, zorder=3, label=None)
        for x, y, f in zip(xs, ys, folds):
            ax.annotate(f, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
        m, s = metrics[key], metrics["std"][key]
        ax.errorbar([i], [m], yerr=[s], fmt="_", color="black", markersize=30, capsize=8, zorder=4)
    ax.set_xticks(range(len(SCORES)), [k.replace("_", " ") for k in SCORES])
    ax.set_ylabel("score on the held-out fold")
    ax.set_title(f"{len(folds)}-fold cross-validation: each fold, mean +/- std")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
