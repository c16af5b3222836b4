import pandas as pd
import pytest

from audioflow.config import SplitConfig
from audioflow.split import SplitError, split_files, summary


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
