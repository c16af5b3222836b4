import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audioflow.evaluation import classification_metrics, confusion_table, write_report

LABELS = ["cat", "dog", "owl"]


def test_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Recalls 2/3, 1, 0 -> balanced accuracy 5/9.
    assert m["balanced_accuracy"] == pytest.approx(5 / 9)
    # F1: cat p=2/3 r=2/3 -> 2/3; dog p=2/3 r=1 -> 0.8; owl 0 -> macro (2/3 + 0.8 + 0) / 3.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 3)
    assert m["per_class"]["owl"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_confusion_rows_are_actual():
    cm = confusion_table(np.array([0, 0, 2]), np.array([1, 0, 2]), LABELS)
    assert cm.loc["cat", "dog"] == 1 and cm.loc["cat", "cat"] == 1 and cm.loc["owl", "owl"] == 1
    assert cm.to_numpy().sum() == 3


def test_report_files(tmp_path: Path):
    preds = pd.DataFrame({
        "path": ["a.wav", "b.wav", "c.wav", "d.wav"],
        "actual": ["cat", "dog", "owl", "owl"],
        "predicted": ["cat", "dog", "owl", "dog"],
        "p_cat": [0.8, 0.1, 0.1, 0.2], "p_dog": [0.1, 0.8, 0.1, 0.5], "p_owl": [0.1, 0.1, 0.8, 0.3],
    })
    m = write_report(preds, LABELS, tmp_path, extra={"split": {"test": 4}})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == m and saved["accuracy"] == 0.75 and saved["split"] == {"test": 4}
    cm = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert list(cm.columns) == LABELS and cm.loc["owl", "dog"] == 1
    png = (tmp_path / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert pd.read_csv(tmp_path / "predictions.csv").shape == (4, 6)


# --------------------------------------------------------------------------- the stage, on the demo data

POSITIVE = ["diastolic_murmur", "systolic_murmur"]  # every murmur against normal: a screening question


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> dict:
    """The demo data through ingest .. export with a tiny model, the operating point asked for."""
    from audioflow import stages
    from audioflow.config import load_params
    from audioflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("demo-eval")
    write_demo_dataset(root / "data", n_recordings=90, seed=2, min_s=2.0, max_s=3.0, progress=False)
    params = load_params("absent.yaml", {
        "data.root": str(root / "data"), "data.group_column": "patient", "features.window_s": 1.5,
        "model.cnn.channels": [8, 16], "train.epochs": 4, "validate.min_per_class": 3,
        "evaluate.positive_labels": POSITIVE, "evaluate.target_recall": 1.0, "evaluate.bootstrap": 500})
    a = {name: root / "artifacts" / name for name in ("ingest", "validate", "features", "split", "train",
                                                      "evaluate", "export")}
    stages.ingest(params, a["ingest"], progress=False)
    stages.validate(params, a["ingest"], a["validate"], progress=False)
    stages.featurize(params, a["ingest"], a["validate"], a["features"], progress=False)
    stages.split(params, a["ingest"], a["validate"], a["split"])
    stages.train(params, a["features"], a["split"], a["train"], progress=False)
    metrics = stages.evaluate(params, a["features"], a["split"], a["train"], a["evaluate"],
                              publish_to=root / "outputs")
    stages.export(params, a["train"], a["ingest"], a["split"], a["evaluate"], a["export"])
    return {"root": root, "params": params, "artifacts": a, "metrics": metrics}


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype={"path": str, "actual": str, "predicted": str}, keep_default_na=False)


def test_demo_intervals_hold_the_figures_and_resample_patients(demo_run):
    m, a = demo_run["metrics"], demo_run["artifacts"]
    split = pd.read_csv(a["split"] / "split.csv", dtype=str, keep_default_na=False)
    iv = m["intervals"]
    assert iv["unit"] == "group" and iv["n_units"] == split.loc[split["split"] == "test", "group"].nunique()
    assert iv["resamples"] == 500 and iv["confidence"] == 0.95
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert iv[key]["low"] <= m[key] <= iv[key]["high"], key
    assert json.loads((demo_run["root"] / "outputs" / "metrics.json").read_text()) == m  # published


def test_demo_curves_are_those_of_the_served_probabilities(demo_run):
    from sklearn.metrics import average_precision_score, roc_auc_score

    m, folder = demo_run["metrics"], demo_run["artifacts"]["evaluate"]
    preds = _read(folder, "predictions.csv")
    labels = list(m["per_class"])
    for lab in labels:
        assert m["auc"][lab] == pytest.approx(roc_auc_score(preds["actual"] == lab, preds[f"p_{lab}"]), abs=1e-6)
        assert m["average_precision"][lab] == pytest.approx(
            average_precision_score(preds["actual"] == lab, preds[f"p_{lab}"]), abs=1e-6)
    assert m["auc"]["macro"] == pytest.approx(np.mean([m["auc"][lab] for lab in labels]), abs=1e-6)
    roc = pd.read_csv(folder / "plots" / "roc.csv")
    assert set(roc["class"]) == set(labels) and roc["fpr"].between(0, 1).all()
    for name in ("curves.png", "reliability.png"):
        assert (demo_run["root"] / "outputs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_calibration_fitted_on_val_and_measured_on_test(demo_run):
    from audioflow.reliability import expected_calibration_error, probabilities

    m, folder = demo_run["metrics"], demo_run["artifacts"]["evaluate"]
    serving = json.loads((folder / "serving.json").read_text())
    cal = m["calibration"]
    assert cal["temperature"] == serving["temperature"] != 1.0
    assert serving["calibrated_on"]["split"] == "val"
    labels = list(m["per_class"])
    served, raw = _read(folder, "predictions.csv"), _read(folder, "predictions_uncalibrated.csv")
    y = served["actual"].map({lab: i for i, lab in enumerate(labels)}).to_numpy()
    assert cal["ece"] == pytest.approx(expected_calibration_error(probabilities(served, labels), y), abs=1e-6)
    assert cal["ece_uncalibrated"] == pytest.approx(expected_calibration_error(probabilities(raw, labels), y),
                                                    abs=1e-6)
    # The temperature rescales the logits, then each recording's windows are averaged: the ranking
    # of one-window recordings never changes, the confidence does.
    assert (served["path"] == raw["path"]).all()


def test_demo_operating_point_reaches_the_target_on_val_and_reports_test(demo_run):
    m, folder = demo_run["metrics"], demo_run["artifacts"]["evaluate"]
    op = m["operating_point"]
    assert op["positive_labels"] == POSITIVE and op["val"]["recall"] == 1.0
    preds = _read(folder, "predictions.csv")
    score = preds[[f"p_{lab}" for lab in POSITIVE]].sum(axis=1)
    positive = preds["actual"].isin(POSITIVE)
    flagged = score >= op["threshold"]
    t = op["test"]
    assert (t["tp"], t["fn"]) == ((flagged & positive).sum(), (~flagged & positive).sum())
    assert t["specificity"] == pytest.approx((~flagged & ~positive).sum() / (~positive).sum(), abs=1e-6)
    assert t["recall_interval"]["low"] <= t["recall"] <= t["recall_interval"]["high"]


def test_demo_model_serves_the_calibrated_probabilities_and_the_threshold(demo_run):
    """The ONNX graph divides by the temperature: ONNX Runtime, with no torch, gives the test
    probabilities evaluate reported, and the operating point decides as evaluate counted."""
    import onnx

    from audioflow.inference import Predictor
    from audioflow.manifest import Dataset

    a, m = demo_run["artifacts"], demo_run["metrics"]
    model = a["export"] / "model.onnx"
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert float(meta["temperature"]) == m["calibration"]["temperature"]
    assert json.loads(meta["operating_point"])["threshold"] == m["operating_point"]["threshold"]
    assert json.loads((a["export"] / "export.json").read_text())["max_abs_diff"] <= 1e-4
    predictor, ds = Predictor(model), Dataset.load(a["ingest"])
    preds = _read(a["evaluate"], "predictions.csv")
    for row in preds.itertuples():
        served = predictor.predict_file(ds.location(row.path))
        for lab in predictor.labels:
            assert served.probabilities[lab] == pytest.approx(getattr(row, f"p_{lab}"), abs=1e-5)
        assert predictor.operating_point.apply(served.probabilities)["positive"] == (
            sum(getattr(row, f"p_{lab}") for lab in POSITIVE) >= m["operating_point"]["threshold"])


def test_demo_model_card_says_what_the_files_say(demo_run):
    m = demo_run["metrics"]
    card = (demo_run["root"] / "outputs" / "model_card.md").read_text()
    for heading in ("## Model", "## Data", "## Training", "## Performance", "## Calibration", "## Operating point",
                    "## Intended use", "## Known limits"):
        assert heading in card, heading
    lo, hi = m["intervals"]["macro_f1"]["low"], m["intervals"]["macro_f1"]["high"]
    assert f"| macro-F1 | {m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] |" in card
    assert m["dataset_fingerprint"] in card and m["params_hash"] in card
    assert f"T = {m['calibration']['temperature']:g}" in card
    assert f"{m['operating_point']['threshold']:.6g}" in card
    split = json.loads((demo_run["artifacts"]["split"] / "split.json").read_text())
    assert f"| all | {split['counts']['train']} | {split['counts']['val']} | {split['counts']['test']} |" in card
    assert "by `patient`" in card
    assert "log-mel (dB re each window's loudest cell, 50 dB kept" in card  # features.level: peak


def test_demo_without_calibration_serves_the_plain_softmax(demo_run, tmp_path: Path):
    from audioflow import stages

    a = demo_run["artifacts"]
    params = demo_run["params"].model_copy(update={"evaluate": demo_run["params"].evaluate.model_copy(
        update={"calibrate": False, "positive_labels": []})})
    m = stages.evaluate(params, a["features"], a["split"], a["train"], tmp_path / "evaluate")
    assert m["calibration"]["temperature"] == 1.0 and "operating_point" not in m
    assert m["calibration"]["ece"] == m["calibration"]["ece_uncalibrated"]
    plain = _read(tmp_path / "evaluate", "predictions.csv")
    assert plain.equals(_read(a["evaluate"], "predictions_uncalibrated.csv"))
    assert "None set" in (tmp_path / "evaluate" / "model_card.md").read_text()


def test_demo_unknown_positive_label_is_refused_by_name(demo_run, tmp_path: Path):
    from audioflow import stages
    from audioflow.errors import AudioflowError

    a = demo_run["artifacts"]
    params = demo_run["params"].model_copy(update={"evaluate": demo_run["params"].evaluate.model_copy(
        update={"positive_labels": ["murmur"]})})
    with pytest.raises(AudioflowError, match=r"evaluate.positive_labels: \['murmur'\] are not labels"):
        stages.evaluate(params, a["features"], a["split"], a["train"], tmp_path / "evaluate")
    assert not (tmp_path / "evaluate").exists()  # nothing half-written


def test_model_card_says_what_epochs_auto_made_of_the_collection(demo_run, tmp_path: Path):
    import shutil

    from audioflow.model_card import write_model_card

    a = demo_run["artifacts"]
    trained = tmp_path / "train"
    shutil.copytree(a["train"] / "model", trained / "model")
    params = json.loads((a["train"] / "params.json").read_text())
    assert "`epochs` 4," in write_model_card(tmp_path / "card.md", a["evaluate"], a["split"], a["train"])
    params["train"]["epochs"] = "auto"
    (trained / "params.json").write_text(json.dumps(params))
    (trained / "train.json").write_text(json.dumps({"epochs": 42}))
    assert "`epochs` auto (42)," in write_model_card(tmp_path / "card.md", a["evaluate"], a["split"], trained)
