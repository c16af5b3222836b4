"""How far to trust a test figure, and how to act on the scores: curves, intervals, calibration,
operating points.

Pure functions of per-recording labels and probabilities (numpy, scikit-learn, scipy), so each
can be checked on synthetic data whose answer is known; ``stages.evaluate`` applies them to the
model's val and test predictions and ``plot_*`` draws the figures (PNG, matplotlib Agg).

- Curves: one-vs-rest ROC and precision-recall per class, with AUC and average precision.
- Intervals: percentile bootstrap over recordings, or over whole groups (patients, speakers)
  when the split has groups, because recordings of one patient are not independent. Every
  resample is drawn as counts per unit (multinomial), and the metrics of all resamples come
  from per-unit true-positive / support / predicted counts in a few matrix products.
- Calibration: expected calibration error over equal-width confidence bins; temperature
  scaling (logits / T) fitted on the validation split by minimising the negative
  log-likelihood of the per-recording probabilities, the quantity a user is served.
- Operating point: the summed probability of a chosen set of positive classes against a
  threshold, the highest one that reaches a target recall on validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# The bootstrap, the figures and the softmax live in their own modules; their names stay
# importable from here.
from audioflow.bootstrap import (  # noqa: F401
    SCORES,
    _interval,
    _units,
    bootstrap_intervals,
    metric_draws,
    paired_difference,
    resample_counts,
)
from audioflow.errors import ReliabilityError  # noqa: F401
from audioflow.reliability_plots import plot_curves, plot_reliability  # noqa: F401
from audioflow.scoring import recording_probabilities, softmax  # noqa: F401

TEMPERATURE_BOUNDS = (0.05, 20.0)  # a temperature at either end says the fit ran away: reported


# --------------------------------------------------------------------------- curves


def _finite_thresholds(t: np.ndarray) -> list[float]:
    # scikit-learn starts ROC thresholds at +inf ("nothing is positive"); JSON, CSV and KFP
    # want finite numbers, and no probability exceeds 1.
    return [min(float(x), 1.0) for x in t]


def one_vs_rest_curves(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Per class: ROC (fpr, tpr, threshold), precision-recall (recall, precision), AUC and
    average precision of ``probs[:, c]`` for "class c against the rest"; their macro means.

    A class with no positives (or nothing else) in ``y_true`` has no curve: its AUC and AP are
    None and the means skip it.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    per_class: dict[str, dict] = {}
    for c, label in enumerate(labels):
        positive = y_true == c
        n_pos = int(positive.sum())
        entry: dict = {"positives": n_pos, "negatives": int(len(y_true) - n_pos), "auc": None,
                       "average_precision": None}
        if 0 < n_pos < len(y_true):
            fpr, tpr, thr = roc_curve(positive, probs[:, c])
            precision, recall, _ = precision_recall_curve(positive, probs[:, c])
            entry |= {"auc": float(auc(fpr, tpr)),
                      "average_precision": float(average_precision_score(positive, probs[:, c])),
                      "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": _finite_thresholds(thr)},
                      "pr": {"recall": recall.tolist(), "precision": precision.tolist()}}
        per_class[label] = entry
    aucs = [e["auc"] for e in per_class.values() if e["auc"] is not None]
    aps = [e["average_precision"] for e in per_class.values() if e["average_precision"] is not None]
    return {"per_class": per_class,
            "macro_auc": float(np.mean(aucs)) if aucs else None,
            "macro_average_precision": float(np.mean(aps)) if aps else None}


def curve_tables(curves: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(roc, pr) in long form, one row per point with its ``class``: what DVC plots read."""
    roc, pr = [], []
    for label, e in curves["per_class"].items():
        if "roc" in e:
            roc.append(pd.DataFrame({"class": label, "fpr": e["roc"]["fpr"], "tpr": e["roc"]["tpr"],
                                     "threshold": e["roc"]["threshold"]}))
            pr.append(pd.DataFrame({"class": label, "recall": e["pr"]["recall"],
                                    "precision": e["pr"]["precision"]}))
    empty_roc = pd.DataFrame(columns=["class", "fpr", "tpr", "threshold"])
    empty_pr = pd.DataFrame(columns=["class", "recall", "precision"])
    return (pd.concat(roc, ignore_index=True) if roc else empty_roc,
            pd.concat(pr, ignore_index=True) if pr else empty_pr)


def summarize_curves(curves: dict) -> dict:
    """AUC and AP per class and their macro means, without the curves (for metrics.json)."""
    return {"auc": {lab: e["auc"] for lab, e in curves["per_class"].items()} | {"macro": curves["macro_auc"]},
            "average_precision": {lab: e["average_precision"] for lab, e in curves["per_class"].items()}
            | {"macro": curves["macro_average_precision"]}}


def pooled_roc(y_positive: np.ndarray, score: np.ndarray) -> dict | None:
    """One ROC curve (fpr, tpr, threshold) of a binary score, or None without both classes."""
    from sklearn.metrics import roc_curve

    y_positive = np.asarray(y_positive, dtype=bool)
    if y_positive.all() or not y_positive.any():
        return None
    fpr, tpr, thr = roc_curve(y_positive, score)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": _finite_thresholds(thr)}


# --------------------------------------------------------------------------- calibration

def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probs)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def fit_temperature(window_logits: np.ndarray, recording: np.ndarray, y_true: np.ndarray,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS, prior_sd: float = 1.0) -> float:
    """The T in ``bounds`` minimising the NLL of the per-recording probabilities (bounded
    scalar search over log T: deterministic), rounded to 4 decimals: the value the ONNX graph
    gets, so every figure uses the served temperature.

    A weak prior keeps it honest on small validation splits: log T ~ Normal(0, ``prior_sd``),
    weighing as much as one recording (its term is divided by the number of recordings). With
    a validation split the model separates perfectly, the likelihood alone keeps improving as
    T -> 0 and would make every answer certain, the wrong ones too; with hundreds of recordings
    the prior no longer matters.
    """
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, dtype=np.int64)
    if not len(y_true):
        raise ReliabilityError("no validation recordings to fit a temperature on")

    def loss(log_t: float) -> float:
        penalty = log_t ** 2 / (2 * prior_sd ** 2 * len(y_true)) if prior_sd else 0.0
        return nll(recording_probabilities(window_logits, recording, math.exp(log_t)), y_true) + penalty

    res = minimize_scalar(loss, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-5})
    t = round(math.exp(float(res.x)), 4)
    # The bounded search never evaluates the ends; the optimum may be there.
    return min((bounds[0], t, bounds[1]), key=lambda v: loss(math.log(v)))


def calibration_table(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Equal-width bins of confidence (the top probability): lower, upper, count, mean
    confidence and accuracy (empty bins have NaN)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    b = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, minlength=n_bins) / count
        acc = np.bincount(b, correct, minlength=n_bins) / count
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": acc})


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Sum over bins of |accuracy - confidence|, weighted by the share of recordings in the bin."""
    t = calibration_table(probs, y_true, n_bins)
    used = t["count"] > 0
    if not used.any():
        raise ReliabilityError("no recordings to compute a calibration error on")
    gap = (t.loc[used, "accuracy"] - t.loc[used, "confidence"]).abs()
    return float((gap * t.loc[used, "count"]).sum() / t["count"].sum())


# --------------------------------------------------------------------------- operating point


def positive_score(probs: np.ndarray, positive: Sequence[int]) -> np.ndarray:
    """The probability of "one of the positive classes": their summed probabilities."""
    return np.asarray(probs, dtype=np.float64)[:, list(positive)].sum(axis=1)


def threshold_for_recall(score: np.ndarray, is_positive: np.ndarray, target_recall: float) -> float:
    """The highest threshold t for which ``score >= t`` flags at least ``target_recall`` of the
    positives (target 1.0: the lowest score of any positive)."""
    pos = np.sort(np.asarray(score)[np.asarray(is_positive, dtype=bool)])[::-1]
    if not len(pos):
        raise ReliabilityError("no positive recordings to set a threshold on")
    need = max(1, math.ceil(target_recall * len(pos) - 1e-9))
    return float(pos[need - 1])


def screening_figures(score: np.ndarray, is_positive: np.ndarray, threshold: float) -> dict:
    """Recall (sensitivity), specificity and precision of ``score >= threshold``, with counts
    (None where undefined: no positives, no negatives, nothing flagged)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    flagged = np.asarray(score) >= threshold
    tp, fn = int((flagged & is_positive).sum()), int((~flagged & is_positive).sum())
    fp, tn = int((flagged & ~is_positive).sum()), int((~flagged & ~is_positive).sum())
    return {"recall": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "tp": tp, "fn": fn, "fp": fp, "tn": tn}


def screening_intervals(score: np.ndarray, is_positive: np.ndarray, threshold: float,
                        groups: Sequence[str] | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Bootstrap intervals of recall and specificity at ``threshold`` (resampling as in
    ``bootstrap_intervals``): the recall of class 1 and of class 0 of the flagged/not task."""
    y = np.asarray(is_positive, dtype=np.int64)
    flagged = (np.asarray(score) >= threshold).astype(np.int64)
    unit, kind = _units(len(y), groups)
    weights, _ = resample_counts(y, unit, n_resamples, seed)
    recall = metric_draws(y, flagged, 2, unit, weights)["recall"]
    units_with = [len(np.unique(unit[y == c])) for c in (0, 1)]  # units holding negatives, positives
    return {"recall": _interval(recall[:, 1], confidence, units_with[1]),
            "specificity": _interval(recall[:, 0], confidence, units_with[0]),
            "unit": kind}

# --------------------------------------------------------------------------- a split's report


def probabilities(preds: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The p_<label> columns of per-recording predictions, in label order."""
    return preds[[f"p_{lab}" for lab in labels]].to_numpy(dtype=np.float64)


def actual_index(preds: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    pos = {lab: i for i, lab in enumerate(labels)}
    return preds["actual"].map(pos).to_numpy(dtype=np.int64)


def window_recordings(window_paths: Sequence[str]) -> np.ndarray:
    """Each window's recording index, recordings sorted by path (the order of
    ``evaluation.aggregate_files``)."""
    codes, _ = pd.factorize(np.asarray(window_paths, dtype=object), sort=True)
    return codes.astype(np.int64)


def fit_operating_point(labels: Sequence[str], positive_labels: Sequence[str], val: pd.DataFrame,
                        target_recall: float) -> dict | None:
    """The threshold on the positive classes' summed probability that reaches
    ``target_recall`` on the validation recordings ``val``; None without positive labels."""
    if not positive_labels:
        return None
    unknown = [lab for lab in positive_labels if lab not in labels]
    if unknown:
        raise ReliabilityError(f"evaluate.positive_labels: {unknown} are not labels of this model {list(labels)}")
    if set(positive_labels) == set(labels):
        raise ReliabilityError(f"evaluate.positive_labels names every label {list(labels)}: an operating point "
                               "needs at least one negative class")
    idx = [list(labels).index(lab) for lab in positive_labels]
    score = positive_score(probabilities(val, labels), idx)
    is_pos = val["actual"].isin(positive_labels).to_numpy()
    if not is_pos.any():
        raise ReliabilityError("the validation split has no recordings of evaluate.positive_labels "
                               f"{list(positive_labels)}: no threshold can be set")
    t = threshold_for_recall(score, is_pos, target_recall)
    return {"positive_labels": list(positive_labels), "target_recall": target_recall, "threshold": t,
            "val": screening_figures(score, is_pos, t)}


def bounds(interval: list[float]) -> dict[str, float]:
    """[low, high] as {"low", "high"}: how metrics.json holds an interval, so that `dvc metrics
    show` and `dvc metrics diff` list its bounds (DVC leaves lists out)."""
    return {"low": interval[0], "high": interval[1]}


def _finite(x):
    """JSON-ready: NaN and infinities (a figure with no recordings behind it) become None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def assess(labels: Sequence[str], test: pd.DataFrame, test_raw: pd.DataFrame, groups: Sequence[str] | None,
           temperature: float, operating_point: dict | None, out: Path, *, n_resamples: int = 1000,
           confidence: float = 0.95, n_bins: int = 15, seed: int = 0, title: str = "Test set",
           thresholds: np.ndarray | None = None) -> dict:
    """Curves, intervals, calibration and the operating point of per-recording test predictions.

    ``test``: as served (temperature applied), ``test_raw``: the same recordings without it.
    Writes ``curves.png``, ``reliability.png`` and the DVC plot tables under ``plots/``
    (``roc.csv``, ``pr.csv``, ``reliability.csv``) into ``out``; returns what goes into
    metrics.json. ``thresholds``: per recording, where each was judged at its own model's
    threshold (cross-validation); else the operating point's.
    """
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    y = actual_index(test, labels)
    pred = np.asarray(probabilities(test, labels).argmax(axis=1), dtype=np.int64)
    probs, raw = probabilities(test, labels), probabilities(test_raw, labels)
    if not (test["path"].to_numpy() == test_raw["path"].to_numpy()).all():
        raise ReliabilityError("calibrated and uncalibrated predictions list different recordings")

    intervals = bootstrap_intervals(y, pred, len(labels), groups, n_resamples, confidence, seed)
    intervals |= {k: bounds(intervals[k]) for k in SCORES}
    curves = one_vs_rest_curves(y, probs, labels)
    roc, pr = curve_tables(curves)
    roc.insert(0, "point", roc.groupby("class").cumcount())
    pr.insert(0, "point", pr.groupby("class").cumcount())
    roc.to_csv(out / "plots" / "roc.csv", index=False)
    pr.to_csv(out / "plots" / "pr.csv", index=False)
    plot_curves(curves, out / "curves.png", title)

    before, after = calibration_table(raw, y, n_bins), calibration_table(probs, y, n_bins)
    ece_before, ece_after = expected_calibration_error(raw, y, n_bins), expected_calibration_error(probs, y, n_bins)
    calibrated = temperature != 1.0
    pd.concat([before.assign(model="uncalibrated")] + ([after.assign(model=f"temperature {temperature:g}")]
                                                      if calibrated else []), ignore_index=True) \
        .loc[lambda t: t["count"] > 0, ["model", "bin", "confidence", "accuracy", "count"]] \
        .to_csv(out / "plots" / "reliability.csv", index=False)
    plot_reliability(before, after if calibrated else None, out / "reliability.png", ece_before,
                     ece_after if calibrated else None, temperature, title)
    at_bound = temperature in TEMPERATURE_BOUNDS
    result = {
        "intervals": intervals,
        **summarize_curves(curves),
        "calibration": {"temperature": temperature, "ece_uncalibrated": ece_before, "ece": ece_after,
                        "nll_uncalibrated": nll(raw, y), "nll": nll(probs, y), "bins": n_bins,
                        "temperature_at_bound": at_bound},
    }
    if operating_point is not None:
        positive = [list(labels).index(lab) for lab in operating_point["positive_labels"]]
        score = positive_score(probs, positive)
        is_pos = test["actual"].isin(operating_point["positive_labels"]).to_numpy()
        t = operating_point["threshold"] if thresholds is None else thresholds
        figures = screening_figures(score, is_pos, t)
        if is_pos.any() and (~is_pos).any():
            ci = screening_intervals(score, is_pos, t, groups, n_resamples, confidence, seed)
            figures |= {"recall_interval": bounds(ci["recall"]), "specificity_interval": bounds(ci["specificity"])}
        result["operating_point"] = operating_point | {"test": figures}
        if (roc_pos := pooled_roc(is_pos, score)) is not None:
            result["operating_point"]["roc_auc"] = float(np.trapezoid(roc_pos["tpr"], roc_pos["fpr"]))
    return _finite(result)
