"""Percentile bootstrap intervals over recordings, or over whole groups (patients, speakers)
when the split has groups, because recordings of one patient are not independent. Every
resample is drawn as counts per unit (multinomial), and the metrics of all resamples come from
per-unit true-positive / support / predicted counts in a few matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audioflow.errors import ReliabilityError

SCORES = ("accuracy", "balanced_accuracy", "macro_f1")


def _units(n: int, groups: Sequence[str] | None) -> tuple[np.ndarray, str]:
    """The resampled unit of each recording: its group where groups are given, else itself."""
    if groups is not None:
        g = np.asarray([str(x) for x in groups], dtype=object)
        if len(g) != n:
            raise ReliabilityError(f"{len(g)} groups for {n} recordings")
        if (g != "").all():
            _, unit = np.unique(g, return_inverse=True)
            return unit.astype(np.int64), "group"
    return np.arange(n, dtype=np.int64), "recording"


def resample_counts(y_true: np.ndarray, unit: np.ndarray, n_resamples: int, seed: int) -> tuple[np.ndarray, bool]:
    """[n_resamples, n_units]: how often each unit is drawn in each resample; and whether the
    draw was stratified.

    Stratified by class when every unit holds one class (a patient with one condition, or a
    recording), as the split itself is: each resample keeps the number of units of each class,
    so no class vanishes from a resample of a small test split. Units that mix classes (FSDD's
    speakers say every digit), or a class with a single unit (whose stratum could never vary:
    a zero-width interval that would claim certainty), are drawn from all units alike.
    """
    n_units = int(unit.max()) + 1 if len(unit) else 0
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([unit, np.asarray(y_true, dtype=np.int64)], axis=1), axis=0)
    strata = [np.arange(n_units)]
    if len(pairs) == n_units:  # one class per unit; sorted by unit: pairs[:, 1] is each unit's class
        by_class = [np.flatnonzero(pairs[:, 1] == c) for c in np.unique(pairs[:, 1])]
        if min(len(m) for m in by_class) >= 2:
            strata = by_class
    pure = len(strata) > 1
    counts = np.zeros((n_resamples, n_units), dtype=np.float64)
    for members in strata:
        k = len(members)
        counts[:, members] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_resamples)
    return counts, pure


def _per_unit(y_true: np.ndarray, y_pred: np.ndarray, unit: np.ndarray, n_units: int, n_classes: int):
    """Per unit and class: true positives, support (actual), predicted."""
    tp, sup, pred = (np.zeros((n_units, n_classes)) for _ in range(3))
    np.add.at(sup, (unit, y_true), 1.0)
    np.add.at(pred, (unit, y_pred), 1.0)
    hit = y_true == y_pred
    np.add.at(tp, (unit[hit], y_true[hit]), 1.0)
    return tp, sup, pred


def metric_draws(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, unit: np.ndarray,
                 weights: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro-F1 and per-class recall for each row of ``weights``
    (units' counts; a row of ones is the test split itself), as in ``classification_metrics``:
    balanced accuracy averages the recall of the classes present, macro-F1 counts a class
    without recordings or predictions as 0."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    tp, sup, pred = (weights @ m for m in _per_unit(y_true, y_pred, unit, weights.shape[1], n_classes))
    total = sup.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(sup > 0, tp / sup, np.nan)
        f1 = np.where(sup + pred > 0, 2 * tp / (sup + pred), 0.0)
        accuracy = np.where(total > 0, tp.sum(axis=1) / total, 0.0)
    present = sup > 0
    balanced = np.where(present.any(axis=1), np.nansum(recall, axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": f1.mean(axis=1), "recall": recall}


def _interval(draws: np.ndarray, confidence: float, n_trials: int | None = None) -> list[float]:
    """Percentile interval of the bootstrap ``draws``.

    A score of exactly 1 (or 0) in every resample (every test unit right) gives the bootstrap
    nothing to vary: [1, 1] would claim certainty. There, with ``n_trials`` units, the exact
    (Clopper-Pearson) bound for "all n right" takes the open side: (alpha / 2) ** (1 / n), the
    rule of three's exact form.
    """
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return [float("nan"), float("nan")]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    if n_trials and lo == hi and lo in (0.0, 1.0):
        bound = alpha ** (1 / n_trials)
        return [float(bound), 1.0] if lo == 1.0 else [0.0, float(1 - bound)]
    return [float(lo), float(hi)]


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, groups: Sequence[str] | None = None,
                        n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap intervals of accuracy, balanced accuracy and macro-F1 (a perfect
    score: the exact bound for all units right, see ``_interval``).

    ``groups``: each recording's group (patient, speaker); given (and none empty), whole groups
    are resampled. Returns ``{metric: [low, high], "unit", "n_units", "resamples",
    "confidence", "stratified", "seed"}``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    if not len(y_true):
        raise ReliabilityError("no recordings to resample")
    unit, kind = _units(len(y_true), groups)
    weights, stratified = resample_counts(y_true, unit, n_resamples, seed)
    draws = metric_draws(y_true, y_pred, n_classes, unit, weights)
    n_units = int(unit.max()) + 1
    return {**{k: _interval(draws[k], confidence, n_units) for k in SCORES}, "unit": kind, "n_units": n_units,
            "resamples": n_resamples, "confidence": confidence, "stratified": stratified, "seed": seed}


def paired_difference(y_true: np.ndarray, pred_new: np.ndarray, pred_old: np.ndarray, n_classes: int,
                      metric: str = "macro_f1", groups: Sequence[str] | None = None, n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """``metric`` of two models' predictions on the same recordings, and a paired bootstrap
    interval of new - old: both are scored on each resample, so what the resample changes
    (easy or hard recordings) cancels in the difference."""
    if metric not in SCORES:
        raise ReliabilityError(f"metric {metric!r} is not one of {SCORES}")
    y_true = np.asarray(y_true, dtype=np.int64)
    unit, kind = _units(len(y_true), groups)
    weights, stratified = resample_counts(y_true, unit, n_resamples, seed)
    ones = np.ones((1, weights.shape[1]))
    new = metric_draws(y_true, pred_new, n_classes, unit, np.vstack([ones, weights]))[metric]
    old = metric_draws(y_true, pred_old, n_classes, unit, np.vstack([ones, weights]))[metric]
    delta = new[1:] - old[1:]
    return {"metric": metric, "new": float(new[0]), "old": float(old[0]), "delta": float(new[0] - old[0]),
            "delta_interval": _interval(delta, confidence), "new_interval": _interval(new[1:], confidence),
            "old_interval": _interval(old[1:], confidence), "unit": kind, "n_units": int(unit.max()) + 1,
            "resamples": n_resamples, "confidence": confidence, "stratified": stratified, "seed": seed}
