"""Cross-validation (split.strategy: kfold) under DVC, the CLI and ZenML, on 60 demo recordings.

One real DVC repository (git, `dvc repro`) runs the folds as stages of their own
(train_fold@<fold>, evaluate_fold@<fold>); the CLI and the ZenML pipeline run the same params on
copies of the same data and must report the same figures. The figures are checked against the
folds' own files: every recording is tested once, by the model of the fold that held it out,
which never trained on it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_dvc import AUDIOFLOW, ROOT, SMALL, new_repo, other_fronts, ran

FOLDS = ["1", "2", "3"]
KFOLD = SMALL | {"split.strategy": "kfold", "split.folds": [1, 2, 3]}
MAIN = ["ingest", "validate", "featurize", "split", "train", "evaluate", "export"]
PER_FOLD = [f"{stage}@{f}" for stage in ("train_fold", "evaluate_fold") for f in FOLDS]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("kfold")
    r = new_repo(base / "project", base / "home")
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copyfile(ROOT / name, r.path / name)
    shutil.copytree(ROOT / "audioflow", r.path / "audioflow", ignore=shutil.ignore_patterns("__pycache__"))
    r.set_params(KFOLD)
    r.run(AUDIOFLOW, "demo-data", "data", "--n-recordings", "60", "-q")
    r.dvc("add", "data")
    r.first_repro = r.repro()
    r.commit("3-fold cross-validation on 60 demo recordings")
    return r


def test_dvc_runs_each_fold_as_stages_of_its_own(repo):
    assert sorted(repo.first_repro) == sorted(MAIN + PER_FOLD)
    order = repo.first_repro
    for f in FOLDS:  # each fold's model is evaluated after it is trained, and before the mean is taken
        assert order.index(f"train_fold@{f}") < order.index(f"evaluate_fold@{f}") < order.index("evaluate")
    assert repo.repro() == []
    # Each fold is cached on its own: with one fold's folder gone, only that fold trains again
    # (its evaluation comes back from DVC's run cache when the model is the same), then the
    # mean; the other folds and the final model stay as they are, and so do the figures.
    before = (repo.path / "outputs/metrics.json").read_text()
    shutil.rmtree(repo.path / "artifacts/folds/2")
    out = repo.dvc("repro")
    assert "train_fold@2" in ran(out) and set(ran(out)) <= {"train_fold@2", "evaluate_fold@2", "evaluate"}, out
    for stage in ("train_fold@1", "train_fold@3", "evaluate_fold@1", "evaluate_fold@3", "train"):
        assert f"Stage '{stage}' didn't change" in out, stage
    assert (repo.path / "artifacts/folds/2/train/model/model.safetensors").is_file()
    assert (repo.path / "outputs/metrics.json").read_text() == before
    assert "Data and pipelines are up to date" in repo.dvc("status")


def test_kfold_figures_are_the_folds(repo):
    art, out = repo.path / "artifacts", repo.path / "outputs"
    metrics = json.loads((out / "metrics.json").read_text())
    folds = {f: json.loads((art / "folds" / f / "evaluate" / "metrics.json").read_text()) for f in FOLDS}
    assert metrics["cross_validation"]["folds"] == FOLDS and list(metrics["folds"]) == FOLDS
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        values = [folds[f][key] for f in FOLDS]
        assert metrics[key] == pytest.approx(np.mean(values))
        assert metrics["std"][key] == pytest.approx(np.std(values, ddof=1))
        assert [metrics["folds"][f][key] for f in FOLDS] == values
    for label, per in metrics["per_class"].items():
        assert per["f1"] == pytest.approx(np.mean([folds[f]["per_class"][label]["f1"] for f in FOLDS]))
        assert metrics["std"]["per_class"][label]["recall"] == pytest.approx(
            np.std([folds[f]["per_class"][label]["recall"] for f in FOLDS], ddof=1))

    split = pd.read_csv(art / "split" / "split.csv", dtype=str, keep_default_na=False)
    preds = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    # Every recording once, predicted by the model of the fold that held it out ...
    assert sorted(preds["path"]) == sorted(split["path"]) and metrics["n"] == len(split) == 60
    assert dict(zip(preds["path"], preds["fold"])) == dict(zip(split["path"], split["fold"]))
    for f in FOLDS:
        table = pd.read_csv(art / "split" / "folds" / f / "split.csv", dtype=str, keep_default_na=False)
        tested = set(table.loc[table["split"] == "test", "path"])
        assert tested == set(preds.loc[preds["fold"] == f, "path"])
        # ... which never saw it: not in that fold's train or val
        assert not tested & set(table.loc[table["split"] != "test", "path"])
        assert folds[f]["n"] == len(tested)
    pooled = (preds["actual"] == preds["predicted"]).mean()
    assert metrics["pooled"]["accuracy"] == pytest.approx(pooled)
    cm = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 60 and np.trace(cm.to_numpy()) == (preds["actual"] == preds["predicted"]).sum()
    # The exported model trained on every recording (validation for early stopping, no test).
    assert set(split["split"]) == {"train", "val"} and metrics["split"]["test"] == 0
    assert (out / "model.onnx").is_file() and (art / "evaluate" / "folds.png").is_file()
    shown = json.loads(repo.dvc("metrics", "show", "--json"))
    assert "std" in json.dumps(shown)
    # Intervals, curves and calibration of the out-of-fold predictions, each fold's model with its
    # own temperature; the exported model's comes from its own validation part.
    iv = metrics["intervals"]
    assert iv["n_units"] == split["group"].nunique() and iv["unit"] == "group"
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert iv[key]["low"] <= metrics["pooled"][key] <= iv[key]["high"], key
    assert set(metrics["calibration"]["fold_temperatures"]) == set(FOLDS)
    for f in FOLDS:
        assert metrics["calibration"]["fold_temperatures"][f] == folds[f]["calibration"]["temperature"]
    serving = json.loads((art / "evaluate" / "serving.json").read_text())
    assert metrics["calibration"]["temperature"] == serving["temperature"]
    card = (out / "model_card.md").read_text()
    assert "3-fold cross-validation" in card and "mean ± std over folds" in card


def test_cli_and_zenml_report_what_dvc_reports(repo, tmp_path: Path):
    env, scratch, project, cli = other_fronts(repo, tmp_path)

    def zenml_run() -> str:
        p = subprocess.run([sys.executable, "-m", "pipelines.run"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
        return p.stdout

    first = zenml_run()
    p = subprocess.run([str(AUDIOFLOW), "run", "-q"], cwd=cli, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    dvc_metrics = json.loads((repo.path / "outputs" / "metrics.json").read_text())
    for where in (project, cli):
        assert json.loads((where / "outputs" / "metrics.json").read_text()) == dvc_metrics, where.name
        assert (where / "outputs" / "predictions.csv").read_text() == \
            (repo.path / "outputs" / "predictions.csv").read_text(), where.name
    # The summary prints mean ± std and each fold.
    for text in (first, p.stdout):
        assert re.search(r"cross-val +accuracy \d\.\d{3} ± \d\.\d{3}, macro-F1 \d\.\d{3} ± \d\.\d{3}", text), text
        assert all(re.search(rf"fold {f} +accuracy", text) for f in FOLDS), text
    # Each fold is a step of its own (train_fold_<fold>, evaluate_fold_<fold>), cached on its own:
    # a second run takes every step but publish from the cache.
    n_steps = len(MAIN) + len(PER_FOLD) + 1
    assert re.search(rf"\(0 of {n_steps} steps from the cache\)", first), first
    assert re.search(rf"\({n_steps - 1} of {n_steps} steps from the cache\)", zenml_run())
    assert list(scratch.iterdir()) == []
