"""Honest promotion under ZenML, against a real local store (SQLite) in a temporary config path:
a model is promoted to production only when it is not worse than the production version on the
same test split (paired bootstrap), and the decision with its figures is logged.

Three runs of the documented command on the demo data: the first is promoted (nothing in
production yet); an untrained model is refused and production stays; the first model's
parameters again (every step from the cache) are compared, found equal, and promoted.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.test_zenml import BIN, ROOT, Project

pytestmark = pytest.mark.slow

# Small enough for two cores, good enough that an untrained model is worse beyond doubt on the
# demo's test patients.
# No refit: a second training pass of each model would test nothing more about promotion.
GOOD = {"train.epochs": 12, "features.n_mels": 32, "model.cnn.channels": [8, 16, 32], "train.patience": 12,
        "train.refit": False}
WORSE = {"train.epochs": 1, "train.lr": 1e-6}

VERSIONS = """
import json
from zenml.client import Client
from zenml.enums import ModelStages
c = Client()
versions = c.list_model_versions("audioflow-classifier", size=50).items
print(json.dumps({
    "stages": {v.name: str(v.stage) for v in versions},
    "production": c.get_model_version("audioflow-classifier", ModelStages.PRODUCTION).name,
    "metadata": {v.name: {k: c.get_model_version("audioflow-classifier", v.name).run_metadata.get(k)
                          for k in ("promoted", "promotion", "macro_f1", "macro_f1_low", "test_split_hash")}
                 for v in versions},
}, default=str))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    from audioflow.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("promotion-project")
    for d in ("steps", "pipelines", "configs"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "params.yaml", root / "params.yaml")
    write_demo_dataset(root / "data", progress=False)  # the demo data as `make demo` writes it
    proj = Project(root)
    for dotted, value in GOOD.items():
        proj.set_param(dotted, value)
    proj.sh(str(BIN / "zenml"), "init")
    return proj


def registry(project: Project) -> dict:
    return json.loads(project.sh(str(BIN / "python"), "-c", VERSIONS).stdout.strip().splitlines()[-1])


def decision(project: Project) -> dict:
    return json.loads((project.root / "outputs" / "promotion.json").read_text())


def test_the_first_model_is_promoted_with_nothing_to_compare(project: Project):
    run = project.run()
    assert run["status"] == "completed" and run["model_version"]["stage"] == "production"
    d = decision(project)
    assert d["promoted"] and "no production version yet" in d["reason"]
    assert "promoted to production" in (project.root / "outputs" / "model_card.md").read_text().lower()
    project.first_f1 = json.loads((project.root / "outputs" / "metrics.json").read_text())["macro_f1"]
    assert run["left_in_tmp"] == []


def test_a_worse_model_is_refused_and_production_stays(project: Project):
    for dotted, value in WORSE.items():
        project.set_param(dotted, value)
    run = project.run()
    assert run["status"] == "completed"  # refusing is a decision, not a failure
    d = decision(project)
    assert not d["promoted"] and d["production_version"] == "1"
    assert d["delta"] < 0 and d["delta_interval"][1] < 0, d  # worse beyond the interval
    assert d["production"] == pytest.approx(project.first_f1, abs=0.05)  # production re-scored by ONNX Runtime
    assert d["same_test_split"] is True and d["unit"] == "group" and d["n_test"] == 47
    assert "worse" in d["reason"] and "production (version 1) stays" in d["reason"]
    reg = registry(project)
    assert reg["production"] == "1" and reg["stages"]["2"] == "staging"
    logged = reg["metadata"]["2"]
    assert logged["promoted"] is False or logged["promoted"] == "False"
    assert "worse" in str(logged["promotion"])
    assert "Not promoted" in (project.root / "outputs" / "model_card.md").read_text()
    assert run["left_in_tmp"] == []  # the production model's copy went too
    assert "Failed to run callback" not in run["log"]  # ZenML removed that copy itself, as it expected


def test_a_model_as_good_as_production_is_promoted(project: Project):
    """The first run's parameters again: every step but publish from the cache, the same model
    file; compared with production on the same recordings, the difference is exactly 0."""
    project.set_param("train.epochs", GOOD["train.epochs"])
    project.set_param("train.lr", 0.003)
    run = project.run()
    assert {n for n, s in run["steps"].items() if s == "completed"} == {"publish"}
    d = decision(project)
    assert d["promoted"] and d["delta"] == 0 and d["delta_interval"] == [0.0, 0.0]
    assert d["labels_agree"] == 1.0
    assert "Failed to run callback" not in run["log"]
    reg = registry(project)
    # One version per stage: 3 took production from 1, and staging (on its way) from the refused 2.
    assert reg["production"] == "3" and reg["stages"]["1"] == "archived" and reg["stages"]["2"] == "archived"
    assert run["left_in_tmp"] == []
