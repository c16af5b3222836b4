import pandas as pd
import pytest

from audioflow.config import SplitConfig
from audioflow.split import SplitError, fold_names, fold_tables, load, save, split_files, summary


def table(n_groups=20, per_group=4, labels=("a", "b", "c"), fold=None):
    rows = []
    for g in range(n_groups):
        lab = labels[g % len(labels)]
        for k in range(per_group):
            rows.append({"path": f"{lab}/{g}_{k}.wav", "label": lab, "group": f"g{g}",
                         "fold": fold(g) if fold else ""})
    return pd.DataFrame(rows)


def test_groups_never_straddle_and_classes_everywhere():
    t = split_files(table(n_groups=30), SplitConfig(seed=1))
    assert t.groupby("group")["split"].nunique().max() == 1
    for s in ("train", "val", "test"):
        assert set(t.loc[t.split == s, "label"]) == {"a", "b", "c"}
    counts = summary(t)["counts"]
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
    assert abs(counts["test"] / len(t) - 0.15) < 0.1


def test_seeded_and_seed_sensitive():
    a = split_files(table(n_groups=30), SplitConfig(seed=3))
    b = split_files(table(n_groups=30), SplitConfig(seed=3))
    c = split_files(table(n_groups=30), SplitConfig(seed=4))
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_without_groups_each_file_is_its_own_group():
    t = table(n_groups=6, per_group=10)
    t["group"] = ""
    out = split_files(t, SplitConfig())
    # Group g0's files may now be spread: there are no groups to keep together.
    assert out.groupby(t["path"].str.split("_").str[0])["split"].nunique().max() > 1


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(SplitError, match="only 1 group"):
        split_files(table(n_groups=1), SplitConfig())
    # Three groups, one per class: a class would be missing from training.
    with pytest.raises(SplitError, match="no training recordings"):
        split_files(table(n_groups=3), SplitConfig())


def test_few_groups_hold_out_whole_groups():
    t = split_files(table(n_groups=6, labels=("a", "b")), SplitConfig())
    assert t.groupby("group")["split"].nunique().max() == 1
    for name in ("train", "val", "test"):
        assert set(t.loc[t.split == name, "label"]) == {"a", "b"}, name


def test_predefined_folds_and_val_carved_from_train():
    t = table(n_groups=30, fold=lambda g: "test" if g < 6 else "train")
    out = split_files(t, SplitConfig(strategy="predefined"))
    assert (out.loc[t["fold"] == "test", "split"] == "test").all()
    assert set(out.loc[t["fold"] == "train", "split"]) == {"train", "val"}
    bad = table(n_groups=9, fold=lambda g: "holdout")
    with pytest.raises(SplitError, match="unknown fold value"):
        split_files(bad, SplitConfig(strategy="predefined"))
    with pytest.raises(SplitError, match="needs data.fold_column"):
        split_files(table(), SplitConfig(strategy="predefined"))


# --------------------------------------------------------------------------- kfold


def kfold(folds=(1, 2, 3, 4), **kw) -> SplitConfig:
    return SplitConfig(strategy="kfold", folds=list(folds), **kw)


def test_kfold_tests_every_recording_once_and_keeps_groups_whole():
    t = table(n_groups=40)
    cfg = kfold()
    main = split_files(t, cfg)
    tables = fold_tables(main, cfg)
    assert list(tables) == ["1", "2", "3", "4"]
    tested = pd.concat([ft.loc[ft.split == "test", ["path"]].assign(fold=name) for name, ft in tables.items()])
    assert sorted(tested["path"]) == sorted(t["path"])  # each recording in exactly one test fold
    assert dict(zip(tested["path"], tested["fold"])) == dict(zip(main["path"], main["fold"]))
    for name, ft in tables.items():
        assert ft.groupby("group")["split"].nunique().max() == 1, name  # no group in two parts
        assert set(ft.loc[ft.split == "train", "label"]) == {"a", "b", "c"}, name
        assert (ft.split == "val").sum() > 0, name
        # test = this fold only; train and val come from the other folds
        assert set(ft.loc[ft.split == "test", "path"]) == set(main.loc[main.fold == name, "path"])
    # Assigned folds never split a group, and are stratified: each fold tests every class.
    assert main.groupby("group")["fold"].nunique().max() == 1
    assert all(set(main.loc[main.fold == f, "label"]) == {"a", "b", "c"} for f in "1234")
    # The final model trains on everything but its validation part: no test.
    assert set(main["split"]) == {"train", "val"}


def test_kfold_official_folds_from_the_fold_column():
    # ESC-50 style: integers 1-5 in the manifest (read as text, "3.0" included).
    t = table(n_groups=25, fold=lambda g: f"{g % 5 + 1}" if g != 7 else "3.0")
    main = split_files(t, kfold(folds=[1, 2, 3, 4, 5]))
    expect = [str(int(float(v))) for v in t["fold"]]
    assert main["fold"].tolist() == expect
    tables = fold_tables(main, kfold(folds=[1, 2, 3, 4, 5]))
    for name, ft in tables.items():
        assert set(ft.loc[ft.split == "test", "path"]) == set(t.loc[main.fold == name, "path"])


def test_kfold_fold_column_problems_are_named():
    with pytest.raises(SplitError, match=r"fold value\(s\) \['6'\] are not in split.folds"):
        split_files(table(n_groups=25, fold=lambda g: f"{g % 6 + 1}"), kfold(folds=[1, 2, 3, 4, 5]))
    with pytest.raises(SplitError, match=r"1 recording\(s\) have no fold|4 recording\(s\) have no fold"):
        split_files(table(n_groups=25, fold=lambda g: "" if g == 3 else f"{g % 5 + 1}"), kfold(folds=[1, 2, 3, 4, 5]))
    with pytest.raises(SplitError, match=r"split.folds \['5'\] name no recordings"):
        split_files(table(n_groups=24, fold=lambda g: f"{g % 4 + 1}"), kfold(folds=[1, 2, 3, 4, 5]))


def test_kfold_too_few_groups_and_untrainable_folds_are_clear_errors():
    with pytest.raises(SplitError, match="5 folds need at least 5 groups"):
        split_files(table(n_groups=4, labels=("a", "b")), kfold(folds=[1, 2, 3, 4, 5]))
    # Official folds that put a whole class in one fold leave that fold's model without it.
    with pytest.raises(SplitError, match=r"fold 1: classes with no training recordings: \['c'\]"):
        split_files(table(n_groups=30, fold=lambda g: "1" if g % 3 == 2 else f"{g % 2 + 1}"), kfold(folds=[1, 2]))


def test_kfold_saved_and_loaded_per_fold(tmp_path):
    cfg = kfold(folds=["x", "y", "z"])
    main = split_files(table(n_groups=30), cfg)
    tables = fold_tables(main, cfg)
    save(main, tmp_path, tables)
    assert fold_names(tmp_path) == ["x", "y", "z"]
    assert load(tmp_path)["fold"].tolist() == main["fold"].tolist()
    for name, ft in tables.items():
        assert load(tmp_path, name)["split"].tolist() == ft["split"].tolist()
    with pytest.raises(SplitError, match="has no fold 'w'"):
        load(tmp_path, "w")


@pytest.mark.parametrize(("split", "message"), [
    ({"strategy": "kfold"}, "needs split.folds"),
    ({"strategy": "kfold", "folds": [1]}, "needs split.folds"),
    ({"strategy": "stratified", "folds": [1, 2]}, "split.strategy is stratified"),
    ({"strategy": "kfold", "folds": [1, "1"]}, "names a fold twice"),
    ({"strategy": "kfold", "folds": ["a/b", "c"]}, "cannot name a folder"),
])
def test_kfold_config_errors(split, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig(**split)


def with_copies(t: pd.DataFrame, copies: list[tuple[int, int]], groups: bool = True) -> pd.DataFrame:
    """``t`` with a content hash per row; each (i, j) gives row j row i's content (a copy, same label)."""
    t = t.copy()
    t["sha256"] = [f"h{i}" for i in range(len(t))]
    if not groups:
        t["group"] = ""
    for i, j in copies:
        t.loc[j, ["sha256", "label"]] = t.loc[i, ["sha256", "label"]].to_numpy()
    return t


# Copies of one recording in different groups (or, without groups, anywhere): a chain across three
# groups too, so that joining is transitive.
COPIES = [(0, 40), (4, 41), (41, 80), (8, 100)]


@pytest.mark.parametrize("groups", [True, False], ids=["groups", "no-groups"])
@pytest.mark.parametrize("strategy", ["stratified", "kfold", "predefined"])
def test_identical_recordings_never_straddle_splits(strategy: str, groups: bool):
    """Under every strategy, copies land in one split (and in one test fold); without copies the
    split is the same as before (content joins units only where it is shared)."""
    fold = (lambda g: "test" if g % 5 == 0 else "train") if strategy == "predefined" else None
    t = with_copies(table(n_groups=30, fold=fold), [(i, j) for i, j in COPIES if fold is None or
                                                    fold(i // 4) == fold(j // 4)], groups)
    cfg = SplitConfig(strategy=strategy, folds=[1, 2, 3, 4, 5] if strategy == "kfold" else [], seed=7)
    out = split_files(t, cfg)
    assert out.groupby("sha256")["split"].nunique().max() == 1
    if strategy == "kfold":
        assert out.groupby("sha256")["fold"].nunique().max() == 1
        for name, ft in fold_tables(out, cfg).items():
            assert ft.groupby("sha256")["split"].nunique().max() == 1, name
    unique = with_copies(table(n_groups=30, fold=fold), [], groups)  # every recording's own content
    assert (split_files(unique, cfg)["split"] == split_files(unique.drop(columns="sha256"), cfg)["split"]).all()


def test_predefined_copies_across_the_given_splits_are_warned_about():
    """A collection's own split is the user's call: copies across it stay, with a warning."""
    t = with_copies(table(n_groups=30, fold=lambda g: "test" if g < 6 else "train"), [(0, 60)])
    with pytest.warns(UserWarning, match="copies of one recording"):
        out = split_files(t, SplitConfig(strategy="predefined"))
    assert out.loc[0, "split"] == "test" and out.loc[60, "split"] in ("train", "val")


def test_fold_assignment_is_scikit_learns_to_the_last_bit():
    """stratified_group_folds replaces StratifiedGroupKFold(shuffle=True) for speed: on random
    collections (one recording per group or several, 2-13 labels of uneven sizes, 2-11 folds)
    every recording lands in the fold scikit-learn puts it in. Ties between folds are decided
    by the last bit of a float, so this fails if the arithmetic differs at all."""
    import warnings

    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from audioflow.split import stratified_group_folds

    rng = np.random.default_rng(11)
    compared = 0
    for case in range(150):
        n, n_labels, k = int(rng.integers(20, 600)), int(rng.integers(2, 14)), int(rng.integers(2, 12))
        labels = rng.choice(n_labels, n, p=rng.dirichlet(np.ones(n_labels) * rng.uniform(0.3, 5))).astype(str)
        groups = (np.arange(n) if case % 2 else rng.integers(0, max(k, n // int(rng.integers(2, 8))), n)).astype(str)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                expected = np.empty(n, dtype=int)
                for fold, (_, test) in enumerate(StratifiedGroupKFold(k, shuffle=True, random_state=case).split(
                        np.zeros(n), labels, groups)):
                    expected[test] = fold
            except ValueError:  # fewer groups than folds, or every label smaller than k
                continue
        assert (stratified_group_folds(labels, groups, k, case) == expected).all(), case
        compared += 1
    assert compared > 120
