"""Every front follows the one declaration of each stage (``audioflow.stages.STAGES``): its
params.yaml sections, the artifacts it reads, writes and waits for, the files it publishes, and
the code it runs (derived from the imports). The KFP wiring is checked in tests/test_kubeflow.py."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml

from audioflow.config import Params
from audioflow.stages import PRODUCER, STAGES, Layout
from tests.stage_imports import ROOT, stage_files

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
LAYOUT = Layout()


# --------------------------------------------------------------------------- the declaration


def test_declarations_are_consistent():
    sections = {f.alias or name for name, f in Params.model_fields.items()}
    seen: set[str] = set()
    for stage in STAGES.values():
        assert set(stage.sections) <= sections, stage.name
        assert set(stage.inputs) | set(stage.after) <= seen, f"{stage.name} reads an artifact no earlier stage writes"
        seen.add(stage.output)
    assert len({s.folder for s in STAGES.values()}) == len(STAGES)
    published = [dst for s in STAGES.values() for _, dst in s.publishes]
    assert len(published) == len(set(published))


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_function_takes_the_declared_inputs(stage: str):
    """``fn(params, *inputs, out, *, progress, publish_to)``, inputs named after the artifacts."""
    s = STAGES[stage]
    params = inspect.signature(s.fn).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["params", *s.inputs, "out"]
    assert {"progress", "publish_to"} <= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def test_the_cli_has_a_command_per_stage():
    from audioflow.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(STAGES) <= set(sub.choices)
    for name, stage in STAGES.items():
        assert sub.choices[name].description, name
        if name != "validate":
            assert stage.output in sub.choices[name].description


# --------------------------------------------------------------------------- dvc.yaml


def test_dvc_has_every_stage_in_order():
    assert list(DVC) == list(STAGES)


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_stage_params_and_command(stage: str):
    assert DVC[stage]["params"] == list(STAGES[stage].sections)
    assert DVC[stage]["cmd"] == f"audioflow {stage} -q"


def _within(path: str, folder: Path) -> bool:
    return Path(path) == folder or folder in Path(path).parents


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_data_deps_are_the_declared_inputs_and_gate(stage: str):
    """Each non-code dependency lies in one declared input (or gate) folder, and each input and
    gate has exactly one; ingest reads the data root."""
    s = STAGES[stage]
    deps = [d for d in DVC[stage]["deps"] if not d.startswith("audioflow/")]
    if not s.inputs:
        assert deps == ["${data.root}"]
        return
    owner = {}
    for dep in deps:
        (artifact,) = [a for a in (*s.inputs, *s.after) if _within(dep, LAYOUT.path(a))] or [None]
        assert artifact is not None, f"dvc.yaml {stage} depends on {dep}, which is no declared input"
        owner.setdefault(artifact, []).append(dep)
    assert sorted(owner) == sorted({*s.inputs, *s.after}), f"dvc.yaml {stage}: deps {deps}"
    assert all(len(v) == 1 for v in owner.values()), owner


def _outs(stage: str) -> list[str]:
    entries = DVC[stage].get("outs", []) + DVC[stage].get("metrics", [])
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_outs_are_the_declared_folder_and_published_files(stage: str):
    s = STAGES[stage]
    outs = _outs(stage)
    published = {(LAYOUT.outputs / dst).as_posix() for _, dst in s.publishes}
    assert {o for o in outs if o.startswith("outputs/")} == published
    in_folder = [o for o in outs if not o.startswith("outputs/")]
    assert in_folder and all(_within(o, LAYOUT.path(s.output)) for o in in_folder), in_folder


@pytest.mark.parametrize("stage", list(STAGES))
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


# --------------------------------------------------------------------------- ZenML


def _step_outputs(fn) -> list[str]:
    """The output names of a ZenML step, in order, from its ``Annotated[..., name]`` return type."""
    ret = typing.get_type_hints(fn.entrypoint, include_extras=True)["return"]
    parts = typing.get_args(ret) if typing.get_origin(ret) is tuple else (ret,)
    return [typing.get_args(p)[1] for p in parts]


@pytest.mark.parametrize("stage", list(STAGES))
def test_zenml_step_reads_writes_and_takes_what_the_stage_declares(stage: str):
    import steps

    s = STAGES[stage]
    fn = getattr(steps, stage)
    params = inspect.signature(fn.entrypoint).parameters
    assert [n for n in params if not n.endswith("_cfg")] == list(s.inputs)
    assert [n for n in params if n.endswith("_cfg")] == [f"{section}_cfg" for section in s.sections]
    assert _step_outputs(fn)[0] == s.output


def test_zenml_publish_step_takes_every_published_folder():
    import steps

    params = inspect.signature(steps.publish.entrypoint).parameters
    assert [n for n in params if n != "outputs"] == [s.output for s in STAGES.values() if s.publishes]


def test_zenml_pipeline_is_wired_from_the_declarations():
    """Compiling the pipeline (no run) gives each step the declared artifacts and gate."""
    from pipelines.training import training_pipeline

    training_pipeline.prepare()
    invocations = training_pipeline.invocations
    for name, s in STAGES.items():
        inv = invocations[name]
        assert {k: (a.invocation_id, a.output_name) for k, a in inv.input_artifacts.items()} == \
            {a: (PRODUCER[a].name, a) for a in s.inputs}, name
        assert set(inv.upstream_steps) >= {PRODUCER[a].name for a in s.after}, name


# --------------------------------------------------------------------------- the KFP components


@pytest.mark.parametrize("stage", list(STAGES))
def test_kfp_component_reads_and_writes_the_declared_artifacts(stage: str):
    from kfp.dsl.types.type_annotations import InputAnnotation, OutputAnnotation

    from pipelines import kubeflow

    s = STAGES[stage]
    hints = typing.get_type_hints(getattr(kubeflow, stage), include_extras=True)

    def annotated(kind) -> list[str]:
        return [n for n, h in hints.items() if kind in getattr(h, "__metadata__", ())]

    assert annotated(InputAnnotation) == list(s.inputs)
    assert annotated(OutputAnnotation)[0] == s.output


@pytest.mark.parametrize("doc", ["dvc.yaml", "README.md", "params.yaml", "Makefile"])
def test_files_the_docs_point_to_exist(doc: str):
    text = (ROOT / doc).read_text()
    for ref in set(re.findall(r"\b((?:docs|configs|benchmarks|tests|steps|pipelines|docker)/[\w./-]+\.\w+)", text)):
        assert (ROOT / ref).exists(), f"{doc} mentions {ref}, which does not exist"
