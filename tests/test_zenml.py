"""The ZenML pipeline against a real local ZenML store (SQLite) in a temporary config path.

Each run is the documented command, `zenml pipeline run pipelines.training.training_pipeline
-c configs/local.yaml`, in a temporary project made by `zenml init`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from audioflow.config import set_key

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = ["ingest", "validate", "featurize", "split", "train", "evaluate", "export", "publish"]

pytestmark = pytest.mark.slow

LAST_RUN = """
import json
from zenml.client import Client
c = Client()
run = c.list_pipeline_runs(sort_by="desc:created", size=1).items[0]
run = c.get_pipeline_run(run.id)
mv = run.model_version
print(json.dumps({
    "status": run.status.value,
    "steps": {n: s.status.value for n, s in run.steps.items()},
    "run_metadata": {k: v for k, v in run.run_metadata.items()},
    "model_version": None if mv is None else {"name": mv.name, "stage": mv.stage,
        "metadata": dict(c.get_model_version(mv.model.name, mv.name).run_metadata)},
    "visualized": sorted(n for s in run.steps.values() for n, a in s.outputs.items()
                         if a[0].visualizations),
    "train_metadata": dict(run.steps["train"].run_metadata),
}, default=str))
"""


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.env = os.environ | {
            "ZENML_CONFIG_PATH": str(root / ".zenml-config"),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "AUDIOFLOW_PARAMS": str(root / "params.yaml"),
            "PYTHONPATH": str(root),
            # Every temporary file of a run lands here, so a test can see what outlived it.
            "TMPDIR": str(root / "tmp"),
        }
        (root / "tmp").mkdir(exist_ok=True)

    def sh(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
        return p

    def run(self, check: bool = True, report: str = LAST_RUN) -> dict:
        """The documented run command, then ``report`` (a script printing JSON about the last run)."""
        p = self.sh(str(BIN / "zenml"), "pipeline", "run", "pipelines.training.training_pipeline",
                    "-c", "configs/local.yaml", check=check)
        last = json.loads(self.sh(sys.executable, "-c", report).stdout.strip().splitlines()[-1])
        last["log"] = p.stdout + p.stderr
        last["left_in_tmp"] = sorted(q.name for q in (self.root / "tmp").iterdir())
        return last

    def set_param(self, dotted: str, value) -> None:
        f = self.root / "params.yaml"
        p = yaml.safe_load(f.read_text())
        set_key(p, dotted, value, existing=True)
        f.write_text(yaml.safe_dump(p))


def rerun(last: dict) -> set[str]:
    return {name for name, status in last["steps"].items() if status == "completed"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    from audioflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("zenml-project")
    # audioflow too, imported from here (PYTHONPATH), so a test can change the library's code.
    for d in ("steps", "pipelines", "configs", "audioflow"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "params.yaml", root / "params.yaml")
    write_demo_dataset(root / "data", n_recordings=60, seed=5, min_s=2.0, max_s=3.0, progress=False)
    proj = Project(root)
    for dotted, value in [("train.epochs", 3), ("features.window_s", 1.5),
                          ("model.cnn.channels", [8, 16]), ("validate.min_per_class", 3)]:
        proj.set_param(dotted, value)
    proj.sh(str(BIN / "zenml"), "init")
    proj.first = proj.run()
    return proj


def test_first_run_runs_every_step_and_writes_outputs(project: Project):
    first = project.first
    assert first["status"] == "completed"
    assert rerun(first) == set(STEPS)
    out = project.root / "outputs"
    for name in ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "model.onnx",
                 "validation_report.json", "predictions.csv", "curves.png", "reliability.png", "model_card.md",
                 "promotion.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    # Metrics are logged as run metadata and on the registered model version.
    assert first["run_metadata"]["macro_f1"] == pytest.approx(metrics["macro_f1"])
    mv = first["model_version"]
    assert mv is not None and mv["metadata"]["macro_f1"] == pytest.approx(metrics["macro_f1"])
    # With their intervals, and what the promotion decided (tests/test_promotion.py: both outcomes).
    assert mv["metadata"]["macro_f1_low"] == pytest.approx(metrics["intervals"]["macro_f1"]["low"])
    assert mv["stage"] == "production"  # the gate passed, and nothing was in production to compare with
    assert json.loads((out / "promotion.json").read_text())["promoted"] is True
    # What the dashboard can show.
    assert {"validation_report", "confusion_matrix", "training_curves", "curves", "model_card"} <= \
        set(first["visualized"])
    # Each epoch's figures became train-step metadata as training ran (the last epoch's remain:
    # the refit's, counted on after the first pass's).
    train_meta = first["train_metadata"]
    assert train_meta["epoch"] == train_meta["epochs_run"] + train_meta["refit_epochs"] >= 2, train_meta
    assert train_meta["refit_epoch"] == train_meta["refit_epochs"] >= 1, train_meta
    assert {"train_loss", "val_loss", "val_macro_f1", "lr"} <= set(train_meta)
    # Import noise from Great Expectations does not reach the user.
    assert "great_expectations" not in first["log"].lower()
    # The run leaves the temporary directory as it found it (stage folders, loaded inputs).
    assert first["left_in_tmp"] == []


def test_unchanged_rerun_reuses_every_step(project: Project):
    (project.root / "outputs" / "metrics.json").unlink()
    last = project.run()
    assert rerun(last) == {"publish"}  # publish is never cached: it refreshes outputs/
    assert (project.root / "outputs" / "metrics.json").exists()
    assert last["left_in_tmp"] == []


def test_train_parameter_reruns_only_train_and_after(project: Project):
    project.set_param("train.lr", 0.002)
    last = project.run()
    assert rerun(last) == {"train", "evaluate", "export", "publish"}


def test_featurize_parameter_reruns_featurize_and_after(project: Project):
    project.set_param("features.n_mels", 32)
    last = project.run()
    assert rerun(last) == {"featurize", "train", "evaluate", "export", "publish"}


def test_changed_library_code_reruns_the_stages_that_run_it(project: Project):
    """ZenML hashes a step's own function, not the audioflow code it calls; each step's cache
    key also holds its stage's files (audioflow.code_deps, what dvc.yaml lists), so a fix in
    features.py reruns featurize and every stage that imports it, and nothing else."""
    import audioflow

    assert project.sh(sys.executable, "-c", "import audioflow; print(audioflow.__file__)").stdout.strip() == \
        str(project.root / "audioflow" / "__init__.py") != audioflow.__file__  # the project's copy runs
    features = project.root / "audioflow" / "features.py"
    features.write_text(features.read_text() + "\n# a fix\n")
    last = project.run()
    assert rerun(last) == {"featurize", "train", "evaluate", "export", "publish"}
    assert project.run()["steps"]["featurize"] == "cached"  # and the new key is stable


def change_recordings(data: Path, change: str) -> None:
    manifest = data / "manifest.csv"
    rows = manifest.read_text().splitlines()
    victim = data / rows[1].split(",")[0]
    if change == "modify":
        y, sr = sf.read(victim, dtype="float32")
        sf.write(victim, np.clip(y * 0.5 + 0.01 * np.sin(np.arange(len(y))), -1, 1), sr)
    elif change == "add":
        extra = victim.with_name("extra_" + victim.name)
        shutil.copyfile(victim, extra)
        y, sr = sf.read(extra, dtype="float32")
        sf.write(extra, y[::-1].copy(), sr)  # new content, not a duplicate
        label, group = rows[1].split(",")[1:3]
        manifest.write_text("\n".join(rows + [f"{extra.relative_to(data).as_posix()},{label},{group}"]) + "\n")
    else:
        victim.unlink()
        manifest.write_text("\n".join(rows[:1] + rows[2:]) + "\n")


def test_changed_recording_reruns_everything(project: Project):
    change_recordings(project.root / "data", "modify")
    last = project.run()
    assert rerun(last) == set(STEPS)


@pytest.mark.parametrize("change", ["add", "remove"])
def test_added_or_removed_recording_changes_the_ingest_cache_key(project: Project, change: str, monkeypatch):
    """ZenML keys the ingest step's cache on ``steps._common.data_fingerprint`` (the run above shows
    that a changed key reruns every step); adding or removing a recording changes the key too."""
    from steps._common import PARAMS_ENV, data_fingerprint

    monkeypatch.chdir(project.root)
    monkeypatch.setenv(PARAMS_ENV, str(project.root / "params.yaml"))
    before = data_fingerprint()
    assert data_fingerprint() == before  # the same data, the same key: cached runs stay cached
    change_recordings(project.root / "data", change)
    assert data_fingerprint() != before


def test_quality_gate_fails_the_run_and_does_not_promote(project: Project):
    project.set_param("evaluate.min_macro_f1", 1.0)
    project.set_param("train.epochs", 1)
    project.set_param("train.lr", 1e-6)  # an untrained model: macro-F1 far below 1
    last = project.run(check=False)
    assert last["status"] == "failed"
    assert "below evaluate.min_macro_f1=1.0" in last["log"]
    assert last["steps"]["evaluate"] == "failed" and "publish" not in rerun(last)
    assert last["run_metadata"]["macro_f1"] < 1.0  # what the failed gate measured is on the run
    assert last["left_in_tmp"] == []  # a failed step cleans up too
    assert last["model_version"]["stage"] in (None, "None", "none")
