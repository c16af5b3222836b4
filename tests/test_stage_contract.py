"""Every front follows the one declaration of each stage: its params.yaml sections
(``audioflow.stages.PARAMS``) and the code it runs (derived from the imports)."""

from __future__ import annotations

import inspect
import re

import pytest
import yaml

from audioflow.stages import PARAMS
from tests.stage_imports import ROOT, stage_files

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_has_every_stage_in_order():
    assert list(DVC) == list(PARAMS)


@pytest.mark.parametrize("stage", list(PARAMS))
def test_dvc_stage_params_and_command(stage: str):
    assert DVC[stage]["params"] == list(PARAMS[stage])
    assert DVC[stage]["cmd"] == f"audioflow {stage} -q"


@pytest.mark.parametrize("stage", list(PARAMS))
def test_dvc_code_deps_are_what_the_stage_imports(stage: str):
    listed = {d for d in DVC[stage]["deps"] if d.startswith("audioflow/")}
    derived = {p.relative_to(ROOT).as_posix() for p in stage_files(stage)}
    assert listed == derived, (f"dvc.yaml {stage}: missing {sorted(derived - listed)}, "
                               f"not run by the stage {sorted(listed - derived)}")


def test_derived_deps_are_not_vacuous():
    def names(stage: str) -> set[str]:
        return {p.relative_to(ROOT).as_posix() for p in stage_files(stage)}

    assert {"audioflow/training.py", "audioflow/models", "audioflow/features.py"} <= names("train")
    # Evaluation no longer runs the training loop, so editing training.py keeps evaluate cached.
    assert "audioflow/training.py" not in names("evaluate") and "audioflow/evaluation.py" in names("evaluate")
    assert "audioflow/cli.py" not in names("train")
    assert names("ingest") == {"audioflow/stages.py", "audioflow/config.py", "audioflow/errors.py",
                               "audioflow/manifest.py", "audioflow/storage.py"}


@pytest.mark.parametrize("stage", list(PARAMS))
def test_zenml_step_takes_exactly_the_stage_sections(stage: str):
    import steps

    fn = getattr(steps, stage).entrypoint
    cfgs = {name for name in inspect.signature(fn).parameters if name.endswith("_cfg")}
    assert cfgs == {f"{section}_cfg" for section in PARAMS[stage]}


@pytest.mark.parametrize("doc", ["dvc.yaml", "README.md", "params.yaml", "Makefile"])
def test_files_the_docs_point_to_exist(doc: str):
    text = (ROOT / doc).read_text()
    for ref in set(re.findall(r"\b((?:docs|configs|benchmarks|tests|steps|pipelines|docker)/[\w./-]+\.\w+)", text)):
        assert (ROOT / ref).exists(), f"{doc} mentions {ref}, which does not exist"
