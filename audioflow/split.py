"""Train/val/test assignment of recordings: stratified by label, never splitting a group.

Splitting happens per recording, not per window, so every window of a file (and every file of
a patient or speaker) lands in the same split and nothing leaks into the evaluation.

``split.strategy: kfold`` assigns every recording to one of ``split.folds`` (by stratified group
k-fold, or from ``data.fold_column``) and writes one train/val/test table per fold
(``folds/<name>/split.csv``: test = that fold, val carved by group from the others). The main
``split.csv`` then holds the final model's split: every recording in train or val, none in
test, because the folds' models measure it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from audioflow.config import SplitConfig
from audioflow.errors import AudioflowError

SPLITS = ("train", "val", "test")
FOLD_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}


class SplitError(AudioflowError, ValueError):
    pass


def _groups(files: pd.DataFrame) -> np.ndarray:
    """Each recording's split unit: its group (data.group_column), or without one the recording
    itself; recordings with identical content (ingest's sha256) join every unit they are in into
    one, named by its smallest member, so copies of a sound never straddle train, val and test."""
    g = files["group"].astype(str)
    units = np.where(g == "", "file:" + files["path"].astype(str), "group:" + g)
    if "sha256" not in files:
        return units
    pairs = pd.DataFrame({"unit": units, "sha256": files["sha256"].to_numpy()}).drop_duplicates()
    shared = pairs[pairs["sha256"].duplicated(keep=False)]  # content found in more than one unit
    if shared.empty:
        return units
    parent = {u: u for u in shared["unit"]}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = u = parent[parent[u]]
        return u

    for members in shared.groupby("sha256", sort=False)["unit"]:
        first, *others = members[1].tolist()
        for other in others:  # identical content in several units: one unit
            a, b = root(first), root(other)
            parent[max(a, b)] = min(a, b)
    return np.array([root(u) if u in parent else u for u in units], dtype=object)


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Each row's fold (0 .. n_splits-1): scikit-learn's ``StratifiedGroupKFold(n_splits,
    shuffle=True, random_state=seed)``, the same assignment to the last bit, in a tenth of its time.

    Its greedy rule: groups in a seeded shuffle, those with the most uneven label counts first;
    each goes to the fold that keeps every label's share across folds most even (the mean over
    labels of the std over folds of count / label total), ties to the fold with fewer
    recordings. scikit-learn evaluates every fold by recomputing the std of every label; here a
    group changes only the labels it holds, so only those are recomputed, for every fold at
    once, with the same floating-point operations in the same order (ties between folds are
    decided by the last bit, so the arithmetic must be the same). tests/test_split.py compares
    the two on hundreds of random collections.
    """
    _, y_inv, y_cnt = np.unique(labels, return_inverse=True, return_counts=True)
    _, g_inv, g_cnt = np.unique(groups, return_inverse=True, return_counts=True)
    if n_splits > len(g_cnt):
        raise SplitError(f"cannot make {n_splits} folds of {len(g_cnt)} group(s)")
    per_group = np.zeros((len(g_cnt), len(y_cnt)))
    np.add.at(per_group, (g_inv, y_inv), 1)
    perm = np.arange(len(g_cnt))
    np.random.RandomState(seed).shuffle(perm)
    per_group = per_group[perm]
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(perm.size)
    total = y_cnt.astype(float)
    per_fold = np.zeros((n_splits, len(y_cnt)))
    spread = np.std(per_fold / total, axis=0)  # each label's std over the folds as they stand
    one_more = np.eye(n_splits)[:, :, None]  # [fold, candidate fold, 1]
    fold_of = np.empty(len(g_cnt), dtype=np.int64)
    sizes = [0.0] * n_splits
    rows, cols = np.nonzero(per_group)  # each group's labels, without a call a group
    held_of = np.split(cols, np.cumsum(np.bincount(rows, minlength=len(per_group)))[:-1])
    spreads = np.empty((n_splits, len(y_cnt)))
    for g in np.argsort(-np.std(per_group, axis=1), kind="stable").tolist():
        counts = per_group[g]
        held = held_of[g]
        # [candidate, held label]: the std over folds if the group went to that candidate.
        # np.std's own steps (numpy/_core/_methods.py _var), without its checks: the same bits.
        x = (per_fold[:, None, held] + one_more * counts[held]) / total[held]
        x -= np.add.reduce(x, axis=0, keepdims=True) / n_splits
        np.multiply(x, x, out=x)
        candidate = np.sqrt(np.add.reduce(x, axis=0) / n_splits)
        spreads[:] = spread
        spreads[:, held] = candidate
        best, best_eval, best_size = 0, math.inf, math.inf
        for i, value in enumerate((np.add.reduce(spreads, axis=1) / spreads.shape[1]).tolist()):  # .mean(axis=1)
            # np.isclose(value, best_eval) with its tolerances, as scikit-learn decides ties
            if value < best_eval or (abs(value - best_eval) <= 1e-8 + 1e-5 * abs(best_eval) and sizes[i] < best_size):
                best, best_eval, best_size = i, value, sizes[i]
        per_fold[best] += counts
        sizes[best] += float(counts.sum())
        spread[held] = candidate[best]
        fold_of[g] = best
    return fold_of[inv_perm[g_inv]]


def _carve(files: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the rows, stratified by label, whole groups only."""
    groups = _groups(files)
    n_groups = len(set(groups))
    # With fewer groups per class than folds (6 speakers, 15 %), hold out a larger share so
    # that the held-out part still gets a group of every class.
    per_class = int(pd.Series(groups).groupby(files["label"].to_numpy()).nunique().min())
    n_splits = min(max(2, round(1 / fraction)), per_class if per_class >= 2 else n_groups)
    # No more folds than the largest class has recordings (scikit-learn's rule, kept).
    n_splits = min(n_splits, int(files["label"].value_counts().max()))
    if n_splits < 2:
        raise SplitError(
            f"cannot hold out {fraction:.0%} by group: only {n_groups} group(s) and at most "
            f"{int(files['label'].value_counts().max())} recording(s) per class; add recordings or groups"
        )
    return stratified_group_folds(files["label"].to_numpy(), groups, n_splits, seed) == 0


def split_files(files: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Return ``files`` with a ``split`` column (train/val/test); under kfold also ``fold``
    (each recording's test fold), with train/val only in ``split`` (see ``fold_table``)."""
    files = files.reset_index(drop=True).copy()
    if cfg.strategy == "kfold":
        files["fold"] = _kfold(files, cfg)
        fold_tables(files, cfg)  # every fold must make a trainable split
        split = np.full(len(files), "train", dtype=object)
        split[_carve(files, cfg.val_fraction, cfg.seed + 1)] = "val"
        files["split"] = split
        _check(files, groups_must_not_straddle=True, parts=("train", "val"))
        return files
    if cfg.strategy == "predefined":
        files["split"] = _predefined(files, cfg)
    else:
        split = np.full(len(files), "train", dtype=object)
        test = _carve(files, cfg.test_fraction, cfg.seed)
        split[test] = "test"
        rest = np.flatnonzero(~test)
        val_frac = cfg.val_fraction / (1 - cfg.test_fraction)
        val = _carve(files.iloc[rest].reset_index(drop=True), val_frac, cfg.seed + 1)
        split[rest[val]] = "val"
        files["split"] = split
    _check(files, groups_must_not_straddle=cfg.strategy != "predefined")
    return files


def _kfold(files: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """The test fold of each recording: the fold column's value, or stratified group k-fold."""
    names = cfg.fold_names
    given = files["fold"].astype(str).str.strip()
    if (given != "").any():
        # Official folds (ESC-50 1-5, UrbanSound8K 1-10): "1" and "1.0" name the same fold.
        given = given.map(lambda v: str(int(float(v))) if _integral(v) else v)
        missing = files.loc[given == "", "path"].tolist()
        unknown = sorted(set(given[given != ""]) - set(names))
        if missing or unknown:
            raise SplitError("; ".join(
                ([f"{len(missing)} recording(s) have no fold, e.g. {missing[:3]}"] if missing else [])
                + ([f"fold value(s) {unknown} are not in split.folds {names}"] if unknown else [])))
        empty = [n for n in names if not (given == n).any()]
        if empty:
            raise SplitError(f"split.folds {empty} name no recordings of data.fold_column")
        return given.to_numpy(dtype=object)
    groups = _groups(files)
    largest = int(files["label"].value_counts().max())
    if len(set(groups)) < len(names) or largest < len(names):
        raise SplitError(f"{len(names)} folds need at least {len(names)} groups (recordings, or "
                         f"speakers/patients with data.group_column) and a class with {len(names)} "
                         f"recordings; there are {len(set(groups))} groups and at most {largest} per class")
    # Classes with fewer groups than folds get no recording in some folds: _check says so.
    fold = stratified_group_folds(files["label"].to_numpy(), groups, len(names), cfg.seed)
    return np.asarray(names, dtype=object)[fold]


def _integral(value: str) -> bool:
    try:
        return float(value).is_integer()
    except ValueError:
        return False


def fold_table(files: pd.DataFrame, name: str, cfg: SplitConfig) -> pd.DataFrame:
    """The train/val/test split of one fold: test = the recordings of fold ``name``, val carved
    by group from the other folds (``split.val_fraction``), train = the rest."""
    table = files.drop(columns=["split"], errors="ignore").reset_index(drop=True).copy()
    test = (table["fold"].astype(str) == name).to_numpy()
    split = np.where(test, "test", "train").astype(object)
    rest = np.flatnonzero(~test)
    val = _carve(table.iloc[rest].reset_index(drop=True), cfg.val_fraction, cfg.seed + 1)
    split[rest[val]] = "val"
    table["split"] = split
    try:
        # Assigned folds keep groups whole by construction; official folds that share a group
        # are the collection's call, and _check warns.
        _check(table, groups_must_not_straddle=False)
    except SplitError as e:
        raise SplitError(f"fold {name}: {e}") from None
    return table


def fold_tables(files: pd.DataFrame, cfg: SplitConfig) -> dict[str, pd.DataFrame]:
    """``fold_table`` of every fold in ``split.folds``, in order."""
    return {name: fold_table(files, name, cfg) for name in cfg.fold_names}


def _predefined(files: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    folds = files["fold"].astype(str).str.lower()
    if (folds == "").all():
        raise SplitError("split.strategy=predefined needs data.fold_column (train/val/test per file)")
    unknown = sorted(set(folds) - set(FOLD_ALIASES))
    if unknown:
        raise SplitError(f"unknown fold value(s) {unknown}; use train, val or test")
    split = folds.map(FOLD_ALIASES).to_numpy(dtype=object)
    if "test" not in set(split):
        raise SplitError("predefined folds name no test recordings")
    if "val" not in set(split):
        # Many collections ship train/test only: hold out part of train, by group, for validation.
        train = np.flatnonzero(split == "train")
        val = _carve(files.iloc[train].reset_index(drop=True), cfg.val_fraction, cfg.seed + 1)
        split[train[val]] = "val"
    return split


def _check(files: pd.DataFrame, groups_must_not_straddle: bool, parts: tuple[str, ...] = SPLITS) -> None:
    labels = sorted(files["label"].unique())
    problems = []
    for name in parts:
        present = set(files.loc[files["split"] == name, "label"])
        missing = [lab for lab in labels if lab not in present]
        if name == "train" and missing:
            problems.append(f"classes with no training recordings: {missing}")
        elif missing:
            warnings.warn(f"{name} split has no recordings of {missing}; add groups of those classes",
                          stacklevel=3)
    groups = _groups(files)
    per_group = pd.Series(files["split"].to_numpy()).groupby(groups).nunique()
    leaking = per_group[per_group > 1].index.tolist()
    if leaking and groups_must_not_straddle:
        problems.append(f"groups in more than one split: {leaking[:10]}")
    elif leaking:
        # Predefined folds are the user's call (FSDD's official split shares speakers), but the
        # reader of the test metrics should know they measure seen groups.
        warnings.warn(f"the collection's folds share {len(leaking)} group(s) (or copies of one recording) "
                      f"across splits, e.g. {leaking[:3]}: test metrics measure what training saw", stacklevel=3)
    if problems:
        raise SplitError("; ".join(problems))


def summary(files: pd.DataFrame) -> dict:
    table = files.groupby(["split", "label"]).size().unstack(fill_value=0)
    return {
        "counts": {s: int((files["split"] == s).sum()) for s in SPLITS},
        "groups": {s: len(set(_groups(files[files["split"] == s]))) for s in SPLITS},
        "per_label": {s: {k: int(v) for k, v in table.loc[s].items()} for s in SPLITS if s in table.index},
    }


def save(files: pd.DataFrame, out_dir: str | Path, folds: dict[str, pd.DataFrame] | None = None) -> None:
    """``split.csv`` and ``split.json``; with ``folds`` (kfold), each fold's in ``folds/<name>/``,
    and the main table keeps each recording's test fold."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files[["path", "label", "group", "split", *(["fold"] if folds else [])]].to_csv(out / "split.csv", index=False)
    info = summary(files) | ({"folds": {name: summary(t)["counts"] for name, t in folds.items()}} if folds else {})
    (out / "split.json").write_text(json.dumps(info, indent=2) + "\n")
    for name, table in (folds or {}).items():
        save(table, out / "folds" / name)


def load(in_dir: str | Path, fold: str | None = None) -> pd.DataFrame:
    """The split table; with ``fold``, that fold's (``split.strategy: kfold``)."""
    folder = Path(in_dir) if fold is None else fold_dir(in_dir, fold)
    return pd.read_csv(folder / "split.csv", dtype=str, keep_default_na=False)


def fold_dir(in_dir: str | Path, fold: str) -> Path:
    folder = Path(in_dir) / "folds" / str(fold)
    if not (folder / "split.csv").is_file():
        raise SplitError(f"{in_dir} has no fold {fold!r}: folds {fold_names(in_dir)} (split.folds, "
                         "with split.strategy: kfold); rerun `audioflow split` after changing them")
    return folder


def fold_names(in_dir: str | Path) -> list[str]:
    """The folds a split folder holds, in ``split.folds`` order ([] unless kfold)."""
    return list(json.loads((Path(in_dir) / "split.json").read_text()).get("folds", {}))
