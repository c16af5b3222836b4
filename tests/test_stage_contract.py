"""Every front follows the one declaration of each stage (``audioflow.stages.STAGES``): its
params.yaml keys, the artifacts it reads and writes, the files it publishes, and the code it runs
(derived from the imports). dvc.yaml is generated from the declarations and must be what the
generator writes now. The KFP wiring is checked in tests/test_kubeflow.py; that each stage reads
only its declared keys, in tests/test_stage_params.py."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml

from audioflow.code_deps import ROOT
from audioflow.config import Params
from audioflow.stages import PRODUCER, STAGES, Layout, code_files, plan

_DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
LAYOUT = Layout()
ITEM = "${item}"  # a per-fold stage's fold in dvc.yaml (`foreach: ${split.folds}`)


def _dvc(stage: str) -> dict:
    """A stage's definition in dvc.yaml; a per-fold stage's is its `do` (one instance per fold)."""
    d = _DVC[stage]
    if STAGES[stage].per_fold:
        assert d["foreach"] == "${split.folds}", stage
        return d["do"]
    return d


DVC = {name: _dvc(name) for name in STAGES}
FOLD_PLAN = (LAYOUT.artifacts / "folds" / "folds.json").as_posix()  # split's, so evaluate's dep exists


def _path(artifact: str) -> Path:
    return LAYOUT.path(artifact, ITEM if PRODUCER[artifact].per_fold else None)


# --------------------------------------------------------------------------- the declaration


def test_declarations_are_consistent():
    sections = {f.alias or name: f.annotation for name, f in Params.model_fields.items()}
    seen: set[str] = set()
    for stage in STAGES.values():
        assert stage.params and len(set(stage.params)) == len(stage.params), stage.name
        for key in stage.params:  # a real key of a real section
            section, name = key.split(".")[:2]
            assert name in sections[section].model_fields, key
        assert set(stage.inputs) <= seen, f"{stage.name} reads an artifact no earlier stage writes"
        seen.add(stage.output)
    assert len({s.folder for s in STAGES.values()}) == len(STAGES)
    for stage in STAGES.values():  # per-fold: a folder per fold; the fold-reader reads a per-fold artifact
        assert ("{fold}" in stage.folder) == stage.per_fold, stage.name
        assert stage.reads_folds is None or (PRODUCER[stage.reads_folds].per_fold and not stage.per_fold)
    published = [dst for s in STAGES.values() for _, dst in s.publishes]
    assert len(published) == len(set(published))


def test_params_yaml_holds_every_declared_key():
    """DVC reads each stage's params keys from params.yaml: a key missing there fails `dvc repro`."""
    given = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in STAGES.values():
        for key in stage.params:
            d = given
            for part in key.split("."):
                assert isinstance(d, dict) and part in d, f"params.yaml has no {key} (read by {stage.name})"
                d = d[part]


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
    assert list(_DVC) == list(STAGES)


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_stage_params_and_command(stage: str):
    assert DVC[stage]["params"] == list(STAGES[stage].params)
    fold = f" --fold {ITEM}" if STAGES[stage].per_fold else ""
    assert DVC[stage]["cmd"] == f"audioflow {stage}{fold} -q"


def _within(path: str, folder: Path) -> bool:
    return Path(path) == folder or folder in Path(path).parents


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_data_deps_are_the_declared_inputs_and_gate(stage: str):
    """Each non-code dependency lies in one declared input (or gate) folder, and each input and
    gate has exactly one, or the files of it the stage declares it reads; ingest reads the data root."""
    s = STAGES[stage]
    deps = [d for d in DVC[stage]["deps"] if not d.startswith("audioflow/")]
    if not s.inputs:
        assert deps == ["${data.root}"]
        return
    owner = {}
    if s.reads_folds:  # every fold's folder: the folds' parent, which split's fold plan makes exist
        assert LAYOUT.path(s.reads_folds).as_posix() in deps, f"dvc.yaml {stage}: deps {deps}"
        deps.remove(LAYOUT.path(s.reads_folds).as_posix())
    for dep in deps:
        (artifact,) = [a for a in s.inputs if _within(dep, _path(a))] or [None]
        assert artifact is not None, f"dvc.yaml {stage} depends on {dep}, which is no declared input"
        owner.setdefault(artifact, []).append(dep)
    assert sorted(owner) == sorted(s.inputs), f"dvc.yaml {stage}: deps {deps}"
    files = s.dvc.get("files", {})
    expected = {a: 1 if isinstance(files.get(a, ""), str) else len(files[a]) for a in s.inputs}
    assert {a: len(v) for a, v in owner.items()} == expected, owner


def _outs(stage: str) -> list[str]:
    entries = DVC[stage].get("outs", []) + DVC[stage].get("metrics", [])
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_outs_are_the_declared_folder_and_published_files(stage: str):
    s = STAGES[stage]
    outs = _outs(stage)
    published = {(LAYOUT.outputs / dst).as_posix() for _, dst in s.publishes}
    assert {o for o in outs if o.startswith("outputs/")} == published
    in_folder = [o for o in outs if not o.startswith("outputs/") and o != FOLD_PLAN]
    assert in_folder and all(_within(o, _path(s.output)) for o in in_folder), in_folder
    assert (FOLD_PLAN in outs) == (stage == "split")


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_code_deps_are_what_the_stage_imports(stage: str):
    listed = {d for d in DVC[stage]["deps"] if d.startswith("audioflow/")}
    derived = {p.relative_to(ROOT).as_posix() for p in code_files(stage)}
    assert listed == derived, (f"dvc.yaml {stage}: missing {sorted(derived - listed)}, "
                               f"not run by the stage {sorted(listed - derived)}")


def test_derived_deps_are_not_vacuous():
    def names(stage: str) -> set[str]:
        return {p.relative_to(ROOT).as_posix() for p in code_files(stage)}

    assert {"audioflow/training", "audioflow/models", "audioflow/features.py"} <= names("train")
    # Evaluation does not run the training loop, so editing training keeps evaluate cached; and a
    # stage runs its own module, not the others' (one module per stage).
    assert "audioflow/training" not in names("evaluate") and "audioflow/evaluation.py" in names("evaluate")
    assert "audioflow/stages/train.py" not in names("evaluate") and "audioflow/stages/export.py" not in names("train")
    assert not any(n.startswith("audioflow/cli") for s in STAGES for n in names(s))
    assert names("ingest") == {"audioflow/stages/ingest.py", "audioflow/stages/base.py", "audioflow/atomic.py",
                               "audioflow/config.py", "audioflow/errors.py", "audioflow/manifest.py",
                               "audioflow/storage.py"}


def test_generated_files_are_what_the_generator_writes(tmp_path: Path):
    """dvc.yaml, the ZenML steps and the KFP components are generated (python -m
    audioflow.stages.generate --write); the committed ones are current, and --check says so."""
    import subprocess
    import sys

    from audioflow.stages.generate import COMMAND, files

    for path, text in files().items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `{COMMAND}` and commit it"
    p = subprocess.run([sys.executable, "-m", "audioflow.stages.generate", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "up to date" in p.stdout, p.stdout + p.stderr
    for path in files():  # each file on its own: one edited, the others current
        for other, body in files().items():
            (tmp_path / other).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / other).write_text(body + ("\n# edited by hand\n" if other == path else ""))
        p = subprocess.run([sys.executable, "-m", "audioflow.stages.generate", "--check"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and f"stale: {path}:" in p.stdout, p.stdout + p.stderr


def test_plan_is_the_stage_loop():
    """Every front loops over ``plan``: the stages in order, per-fold ones once per fold, each
    input from the task that makes it (the fold's own for per-fold artifacts)."""
    assert [t.id for t in plan()] == [s for s in STAGES if not STAGES[s].per_fold]
    tasks = plan(["a", 2])
    ids = [t.id for t in tasks]
    assert ids == ["ingest", "validate", "featurize", "split", "train_fold_a", "train_fold_2", "evaluate_fold_a",
                   "evaluate_fold_2", "train", "evaluate", "export"]
    made = set()
    for t in tasks:
        assert set(t.inputs) | set(t.fold_inputs) <= made, t.id
        made.add(t.ref)
    by_id = {t.id: t for t in tasks}
    assert ("fold_model", "2") in by_id["evaluate_fold_2"].inputs
    assert by_id["evaluate"].fold_inputs == (("fold_evaluation", "a"), ("fold_evaluation", "2"))


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
    # Besides its inputs and sections: a per-fold step's fold, a fold-reader's folds.
    extra = ["fold"] if s.per_fold else [f"{s.reads_folds}s"] if s.reads_folds else []
    assert [n for n in params if not n.endswith("_cfg") and n not in extra] == list(s.inputs)
    assert [n for n in params if n.endswith("_cfg")] == [f"{section}_cfg" for section in s.sections]
    assert all(n in params for n in extra)
    # The folder, then each view a ZenML dashboard shows (KFP's single ROC curve is not one)
    assert _step_outputs(fn) == [s.output] + [name for name, kind in s.views if kind != "roc"]


def test_zenml_steps_key_their_cache_on_their_stage_code(tmp_path: Path, monkeypatch):
    """Every cached step's key holds the digest of exactly the files dvc.yaml lists for its stage
    (tests/test_zenml.py: a changed file reruns those steps in a real store)."""
    import steps
    from audioflow.demo import write_demo_dataset
    from audioflow.stages import code_hash
    from steps import _common

    # ingest's key also fingerprints the recordings: give it some.
    write_demo_dataset(tmp_path / "data", n_recordings=12, progress=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv(_common.PARAMS_ENV, str(tmp_path / "params.yaml"))
    for name in STAGES:
        policy = getattr(steps, name).configuration.cache_policy
        assert policy.cache_func.module == "steps._common", name
        assert getattr(_common, policy.cache_func.attribute)().split(":")[0] == code_hash(name), name
    assert len({code_hash(name) for name in STAGES}) > 5  # not one digest for everything
    assert steps.publish.configuration.enable_cache is False


def test_zenml_publish_step_takes_every_published_folder():
    """And the dataset and split: promotion re-scores the production model on this run's test split."""
    import steps

    params = inspect.signature(steps.publish.entrypoint).parameters
    assert [n for n in params if n != "outputs"] == [s.output for s in STAGES.values() if s.publishes] + \
        ["dataset", "split"]


def _zenml_invocations(tmp_path: Path, monkeypatch, **split) -> dict:
    from pipelines.training import training_pipeline
    from steps._common import PARAMS_ENV

    if split:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["split"].update(split)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.setenv(PARAMS_ENV, str(tmp_path / "params.yaml"))
    training_pipeline.prepare()
    return training_pipeline.invocations


def test_zenml_pipeline_is_wired_from_the_declarations(tmp_path: Path, monkeypatch):
    """Compiling the pipeline (no run) gives each step the declared artifacts and gate; no
    per-fold step without folds."""
    invocations = _zenml_invocations(tmp_path, monkeypatch)
    assert not any(name.startswith(("train_fold", "evaluate_fold")) for name in invocations)
    for name, s in STAGES.items():
        if s.per_fold:
            continue
        inv = invocations[name]
        assert {k: (a.invocation_id, a.output_name) for k, a in inv.input_artifacts.items()} == \
            {a: (PRODUCER[a].name, a) for a in s.inputs}, name
        assert set(inv.upstream_steps) >= {PRODUCER[a].name for a in s.inputs}, name
        # exactly the stage's keys, one <section>_cfg parameter per section
        keys = {f"{sec}.{k}" for p, v in inv.parameters.items() if p.endswith("_cfg") for sec in [p[:-4]] for k in v}
        assert keys == {".".join(k.split(".")[:2]) for k in s.params}, name


def test_zenml_kfold_has_a_step_per_fold_wired_to_its_fold(tmp_path: Path, monkeypatch):
    invocations = _zenml_invocations(tmp_path, monkeypatch, strategy="kfold", folds=[1, 2, "x"])
    for fold in ("1", "2", "x"):
        train, evaluate = invocations[f"train_fold_{fold}"], invocations[f"evaluate_fold_{fold}"]
        assert train.parameters["fold"] == evaluate.parameters["fold"] == fold
        assert evaluate.input_artifacts["fold_model"].invocation_id == f"train_fold_{fold}"
        assert {k: a.invocation_id for k, a in train.input_artifacts.items()} == \
            {"features": "featurize", "split": "split"}
    # evaluate reads every fold's evaluation, in split.folds order
    folds = invocations["evaluate"].input_artifacts["fold_evaluations"]
    assert [a.invocation_id for a in folds] == ["evaluate_fold_1", "evaluate_fold_2", "evaluate_fold_x"]


# --------------------------------------------------------------------------- the KFP components


@pytest.mark.parametrize("stage", [name for name, s in STAGES.items() if not s.per_fold])
def test_kfp_component_reads_and_writes_the_declared_artifacts(stage: str):
    from kfp.dsl.types.type_annotations import InputAnnotation, OutputAnnotation

    from pipelines import kubeflow_components

    s = STAGES[stage]
    hints = typing.get_type_hints(getattr(kubeflow_components, stage), include_extras=True)

    def annotated(kind) -> list[str]:
        return [n for n, h in hints.items() if kind in getattr(h, "__metadata__", ())]

    assert annotated(InputAnnotation) == list(s.inputs)
    assert annotated(OutputAnnotation) == [s.output] + [name for name, _ in s.views]


@pytest.mark.parametrize("doc", ["dvc.yaml", "README.md", "params.yaml", "Makefile", "mkdocs.yml",
                                 *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))])
def test_files_the_docs_point_to_exist(doc: str):
    text = (ROOT / doc).read_text()
    for ref in set(re.findall(r"\b((?:docs|configs|benchmarks|tests|steps|pipelines|docker)/[\w./-]+\.\w+)", text)):
        assert (ROOT / ref).exists(), f"{doc} mentions {ref}, which does not exist"
