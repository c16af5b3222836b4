"""The Kubeflow Pipelines front: the compiled IR (parsed back into KFP's protobuf) and the same
pipeline run end to end under kfp.local (one subprocess per component, no cluster)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--set", "train.epochs=2", "--set", "features.window_s=1.5", "--set", "model.channels=[8,16]",
         "--set", "validate.min_per_class=3"]


def audioflow(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "audioflow"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, f"audioflow {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def artifact_type(spec: pipeline_spec_pb2.PipelineSpec, component: str, output: str) -> str:
    return spec.components[component].output_definitions.artifacts[output].artifact_type.schema_title


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[pipeline_spec_pb2.PipelineSpec, dict]:
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    audioflow("kubeflow", "compile", str(out), "--set", "features.shards=3", "--image", "registry.test/af:1",
              cwd=ROOT)
    docs = list(yaml.safe_load_all(out.read_text()))  # the whole file must be valid YAML
    assert len(docs) == 2
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    return spec, json_format.MessageToDict(platform)


def test_graph_one_task_per_stage_with_sharded_featurize(compiled):
    spec, _ = compiled
    tasks = spec.root.dag.tasks
    assert set(tasks) == {"configure", "ingest", "validate", "featurize", "featurize-2", "featurize-3",
                          "merge-features", "merge-features-2", "split", "train", "evaluate", "export"}
    deps = {name: set(t.dependent_tasks) for name, t in tasks.items()}
    assert deps["ingest"] == {"configure"}
    assert deps["validate"] == {"configure", "ingest"}
    for f in ("featurize", "featurize-2", "featurize-3", "split"):
        assert "validate" in deps[f], f  # nothing reads unvalidated data
    shards = {tasks[f].inputs.parameters["shard"].runtime_value.constant.number_value
              for f in ("featurize", "featurize-2", "featurize-3")}
    assert shards == {0, 1, 2}
    # Two merges join three shards, in order, and train reads the last one.
    assert deps["merge-features-2"] >= {"merge-features", "featurize-3"}
    assert deps["train"] == {"configure", "merge-features-2", "split"}
    assert deps["evaluate"] >= {"train", "merge-features-2", "split"}
    assert deps["export"] >= {"train", "ingest", "split"}
    assert set(spec.root.input_definitions.parameters) == {"data_root", "overrides", "params_yaml"}


def test_images_artifact_types_and_resources(compiled):
    spec, _ = compiled
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    for name, ex in executors.items():
        container = ex.struct_value.fields["container"].struct_value.fields
        assert container["image"].string_value == "registry.test/af:1", name
        assert "audioflow" in " ".join(v.string_value for v in container["args"].list_value.values) or \
            "audioflow" in " ".join(v.string_value for v in container["command"].list_value.values), name
        resources = container["resources"].struct_value.fields
        assert resources["resourceCpuRequest"].string_value and resources["resourceMemoryRequest"].string_value
    train = executors["exec-train"].struct_value.fields["container"].struct_value.fields["resources"]
    accel = train.struct_value.fields["accelerator"].struct_value.fields
    assert accel["resourceType"].string_value == "nvidia.com/gpu" and accel["resourceCount"].string_value == "1"
    assert "accelerator" not in executors["exec-featurize"].struct_value.fields["container"] \
        .struct_value.fields["resources"].struct_value.fields
    expected = {("comp-ingest", "dataset"): "system.Dataset", ("comp-featurize", "features"): "system.Dataset",
                ("comp-validate", "report"): "system.HTML", ("comp-train", "model"): "system.Model",
                ("comp-train", "curves"): "system.HTML", ("comp-evaluate", "metrics"): "system.Metrics",
                ("comp-evaluate", "confusion"): "system.ClassificationMetrics",
                ("comp-export", "onnx_model"): "system.Model"}
    for (component, output), title in expected.items():
        assert artifact_type(spec, component, output) == title, (component, output)


def test_caching_retries_and_s3_secret(compiled):
    spec, platform = compiled
    for name, task in spec.root.dag.tasks.items():
        assert task.caching_options.enable_cache, name
        assert task.retry_policy.max_retry_count == 2, name
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec.deployment_spec.fields["executors"].struct_value.fields)
    for ex in executors.values():
        (secret,) = ex["secretAsEnv"]
        assert secret["secretName"] == "audioflow-s3" and secret["optional"]
        assert {k["envVar"] for k in secret["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_a_wrong_settings_key_is_refused(tmp_path: Path):
    bad = tmp_path / "kfp.yaml"
    bad.write_text((ROOT / "configs/kfp.yaml").read_text() + "\nretries: 3\n")
    p = subprocess.run([str(BIN / "audioflow"), "kubeflow", "compile", str(tmp_path / "p.yaml"), "--config",
                        str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "retries" in p.stderr


@pytest.mark.slow
def test_local_run_matches_the_cli_byte_for_byte(tmp_path: Path):
    """kfp.local, featurize in 3 shards: the merged features, metrics and predictions equal the CLI's."""
    from audioflow.demo import write_demo_dataset

    kfp_project, cli_project, scratch = tmp_path / "kfp", tmp_path / "cli", tmp_path / "tmp"
    scratch.mkdir()
    write_demo_dataset(tmp_path / "data", n_recordings=60, seed=5, min_s=2.0, max_s=3.0, progress=False)
    for where in (kfp_project, cli_project):
        shutil.copytree(ROOT / "pipelines", where / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "configs", where / "configs")
        shutil.copyfile(ROOT / "params.yaml", where / "params.yaml")
    env = os.environ | {"TMPDIR": str(scratch)}
    data = ["--set", f"data.root={tmp_path / 'data'}", "--set", "features.shards=3"]
    p = audioflow("kubeflow", "run-local", "-q", "--pipeline-root", "root", *data, *SMALL, cwd=kfp_project, env=env)
    artifacts = json.loads(re.search(r"artifacts: (\{.*\})", p.stderr).group(1))
    audioflow("run", "-q", *data, *SMALL, cwd=cli_project, env=env)

    merged, whole = Path(artifacts["features"]), cli_project / "artifacts" / "features"
    assert Path(merged).parent.name.startswith("merge-features")
    for name in ("features.npy", "index.csv", "features.json", "params.json"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    for name in ("metrics.json", "predictions.csv"):
        assert (kfp_project / "outputs" / name).read_text() == (cli_project / "outputs" / name).read_text(), name
    assert (kfp_project / "outputs" / "model.onnx").stat().st_size > 0
    assert json.loads((Path(artifacts["onnx_model"]) / "export.json").read_text())["max_abs_diff"] <= 1e-4
    assert list(scratch.iterdir()) == []


def test_each_component_gets_its_own_stage_sections(compiled):
    """The KFP front follows audioflow.stages.PARAMS like the others (tests/test_stage_contract.py)."""
    from audioflow.stages import PARAMS

    spec, _ = compiled
    outputs = spec.components["comp-configure"].output_definitions.parameters
    assert set(outputs) == set(PARAMS)
    for name, task in spec.root.dag.tasks.items():
        if name == "configure":
            continue
        source = task.inputs.parameters["sections"].task_output_parameter
        stage = re.sub(r"^merge-features.*|-\d+$", "", name) or "featurize"
        assert (source.producer_task, source.output_parameter_key) == ("configure", stage), name
