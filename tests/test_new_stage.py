"""docs/ARCHITECTURE.md's worked example, done for real: a new stage is one module and its name in
the registry. In a copy of the project, the module from the guide (its code block, as written)
and one edited line; then the generator, the stage on the command line, and both pipelines
compiled, each with the new step wired from the declaration."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from audioflow.code_deps import ROOT
from audioflow.demo import write_demo_dataset

GUIDE = ROOT / "docs" / "ARCHITECTURE.md"


def _guide_module() -> str:
    """The python block of the guide's worked example."""
    section = GUIDE.read_text().split("### Adding a stage: a worked example", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return "\n".join(line.removeprefix("   ") for line in block.splitlines()) + "\n"


def _project_copy(dest: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("audioflow", "steps", "pipelines", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=skip)
    for name in ("params.yaml", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def _run(code: str, cwd: Path, env: dict) -> str:
    """Python in ``cwd``: its audioflow/, steps/ and pipelines/ come first on the path."""
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{code}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


def test_a_new_stage_is_one_module_and_one_registry_line(tmp_path: Path):
    project = _project_copy(tmp_path / "project")
    (project / "audioflow" / "stages" / "levels.py").write_text(_guide_module())
    registry = project / "audioflow" / "stages" / "__init__.py"
    before = registry.read_text()
    after = before.replace('"validate", ', '"validate", "levels", ', 1)
    assert sum(a != b for a, b in zip(before.splitlines(), after.splitlines())) == 1  # one line
    registry.write_text(after)

    write_demo_dataset(tmp_path / "data", n_recordings=40, min_s=0.5, max_s=1.0, progress=False)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["root"] = str(tmp_path / "data")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = os.environ | {"ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
                        "PYTHONDONTWRITEBYTECODE": "1"}

    out = _run("from audioflow.stages.generate import main; main(['--write'])", project, env)
    assert "wrote steps/stages.py" in out and "wrote pipelines/kubeflow_components.py" in out, out
    dvc = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["levels"]
    assert dvc["cmd"] == "audioflow levels -q" and dvc["params"] == ["validate.low_level_dbfs"]
    assert "audioflow/stages/levels.py" in dvc["deps"] and "artifacts/levels" in dvc["outs"]

    # The command line: `audioflow levels` after ingest and validate, on the copy's code.
    _run("from audioflow.cli import main\nfor c in ('ingest', 'validate', 'levels'): assert main([c, '-q']) == 0",
         project, env)
    rows = (project / "artifacts" / "levels" / "levels.csv").read_text().splitlines()
    assert rows[0] == "path,rms_dbfs,peak_dbfs,low" and len(rows) == 41
    assert json.loads((project / "artifacts" / "levels" / "params.json").read_text()) == \
        {"validate": {"low_level_dbfs": params["validate"]["low_level_dbfs"]}}

    # ZenML: a generated `levels` step wired to ingest's and validate's outputs, given exactly its key.
    wired = _run("""
import json
from pipelines.training import training_pipeline
training_pipeline.prepare()
inv = training_pipeline.invocations["levels"]
print(json.dumps({"inputs": {k: [a.invocation_id, a.output_name] for k, a in inv.input_artifacts.items()},
                  "parameters": inv.parameters,
                  "cache": inv.step.configuration.cache_policy.cache_func.attribute}))
""", project, env)
    wired = json.loads(wired.strip().splitlines()[-1])
    assert wired["inputs"] == {"dataset": ["ingest", "dataset"], "validation": ["validate", "validation"]}
    assert wired["parameters"] == {"validate_cfg": {"low_level_dbfs": params["validate"]["low_level_dbfs"]}}
    assert wired["cache"] == "levels_code"

    # Kubeflow: a `levels` component in the compiled pipeline, fed by the same two artifacts.
    _run("from pipelines.kubeflow import compile_pipeline; compile_pipeline('p.yaml')", project, env)
    spec = next(yaml.safe_load_all((project / "p.yaml").read_text()))  # then the platform spec
    assert "comp-levels" in spec["components"]
    task = spec["root"]["dag"]["tasks"]["levels"]
    assert {k: v["taskOutputArtifact"]["producerTask"] for k, v in task["inputs"]["artifacts"].items()} == \
        {"dataset": "ingest", "validation": "validate"}
