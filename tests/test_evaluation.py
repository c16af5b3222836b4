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
