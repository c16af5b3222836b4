"""Real recordings: the Free Spoken Digit Dataset in ../shared/data/fsdd, read in place."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FSDD

pytestmark = [
    pytest.mark.fsdd,
    pytest.mark.skipif(not (FSDD / "manifest.csv").exists(),
                       reason=f"FSDD not found at {FSDD} (see ../shared/DESIGN.md)"),
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "audioflow.cli", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, f"{args}\n{p.stdout}\n{p.stderr}"
    return p


def test_all_3000_recordings_pass_validation_with_defaults(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("data:\n  group_column: speaker\n")
    p = run("validate", str(FSDD), "-q", "--out", str(tmp_path / "report"), cwd=tmp_path)
    report = json.loads((tmp_path / "report/report.json").read_text())
    assert report["summary"]["n_files"] == 3000 and report["ok"], p.stdout


@pytest.mark.slow
def test_official_split_end_to_end(tmp_path: Path):
    """Train on part of the official train fold, score the official test fold (held out)."""
    m = pd.read_csv(FSDD / "manifest.csv")
    idx = m["path"].str.extract(r"_(\d+)\.wav$")[0].astype(int)
    subset = m[(idx < 2) | ((idx >= 5) & (idx < 15))]  # test: index 0-1; train: 5-14
    subset.to_csv(tmp_path / "subset.csv", index=False)
    (tmp_path / "params.yaml").write_text(
        f"data:\n  root: {FSDD}\n  manifest: {tmp_path / 'subset.csv'}\n  group_column: speaker\n"
        "  fold_column: split\nsplit:\n  strategy: predefined\nfeatures:\n  window_s: 1.0\n"
        "train:\n  epochs: 8\n  refit: false\n"  # the first pass's model: half the time
    )
    run("run", "-q", cwd=tmp_path)
    metrics = json.loads((tmp_path / "outputs/metrics.json").read_text())
    assert metrics["split"]["test"] == 120  # exactly the official test recordings chosen
    preds = pd.read_csv(tmp_path / "outputs/predictions.csv", dtype=str)
    assert set(preds["path"]) == set(subset.loc[subset["split"] == "test", "path"])
    # Ten balanced classes: chance is 0.1. A working pipeline is far above it.
    assert metrics["accuracy"] > 0.6, metrics
