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
SMALL = ["--set", "train.epochs=2", "--set", "features.window_s=1.5", "--set", "model.cnn.channels=[8,16]",
         "--set", "validate.min_per_class=3"]


def audioflow(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "audioflow"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, f"audioflow {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def kubeflow_cli(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pipelines.kubeflow_cli ARGS`` in ``cwd`` (a project root: its pipelines/ is the one run)."""
    p = subprocess.run([sys.executable, "-m", "pipelines.kubeflow_cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)
    assert not check or p.returncode == 0, \
        f"kubeflow_cli {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def artifact_type(spec: pipeline_spec_pb2.PipelineSpec, component: str, output: str) -> str:
    return spec.components[component].output_definitions.artifacts[output].artifact_type.schema_title


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[pipeline_spec_pb2.PipelineSpec, dict]:
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    kubeflow_cli("compile", str(out), "--set", "features.shards=3", "--image", "registry.test/af:1",
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
    assert deps["export"] >= {"train", "ingest", "split", "evaluate"}  # temperature, operating point
    assert set(spec.root.input_definitions.parameters) == {"data_root", "overrides", "params_yaml", "checkpoint_root",
                                                           "checkpoint_run"}
    run_id = tasks["train"].inputs.parameters["run_id"].runtime_value.constant.string_value
    assert run_id == "{{$.pipeline_job_uuid}}"  # checkpoints are kept per run


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
                ("comp-validate", "validation_report"): "system.HTML",
                ("comp-train", "trained_model"): "system.Model", ("comp-train", "training_curves"): "system.HTML",
                ("comp-evaluate", "metrics"): "system.Metrics",
                ("comp-evaluate", "confusion_matrix"): "system.ClassificationMetrics",
                ("comp-evaluate", "roc_curve"): "system.ClassificationMetrics",
                ("comp-evaluate", "curves"): "system.HTML", ("comp-evaluate", "model_card"): "system.Markdown",
                ("comp-export", "onnx_model"): "system.Model"}
    for (component, output), title in expected.items():
        assert artifact_type(spec, component, output) == title, (component, output)


def test_caching_retries_and_s3_secret(compiled):
    spec, platform = compiled
    for name, task in spec.root.dag.tasks.items():
        # configure runs every time: it reads the code digests in the image (next test)
        assert task.caching_options.enable_cache == (name != "configure"), name
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
    p = kubeflow_cli("compile", str(tmp_path / "p.yaml"), "--config", str(bad), cwd=ROOT, check=False)
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
    p = kubeflow_cli("run-local", "-q", "--pipeline-root", "root", *data, *SMALL, cwd=kfp_project, env=env)
    artifacts = json.loads(re.search(r"artifacts: (\{.*\})", p.stderr).group(1))
    audioflow("run", "-q", *data, *SMALL, cwd=cli_project, env=env)

    merged, whole = Path(artifacts["features"]), cli_project / "artifacts" / "features"
    assert Path(merged).parent.name.startswith("merge-features")
    for name in ("features.npy", "index.csv", "features.json", "params.json"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    for name in ("metrics.json", "predictions.csv", "model_card.md"):
        assert (kfp_project / "outputs" / name).read_text() == (cli_project / "outputs" / name).read_text(), name
    assert (kfp_project / "outputs" / "model.onnx").stat().st_size > 0
    assert json.loads((Path(artifacts["onnx_model"]) / "export.json").read_text())["max_abs_diff"] <= 1e-4
    assert list(scratch.iterdir()) == []


def _stage_of(task: str) -> str:
    """The stage a task runs: featurize-2 and merge-features-2 are featurize."""
    return re.sub(r"^merge-features.*|-\d+$", "", task) or "featurize"


def test_the_wiring_follows_the_stage_declarations(compiled):
    """Each task reads the artifacts its stage declares, from the task of the stage that writes
    them (tests/test_stage_contract.py checks the other fronts)."""
    from audioflow.stages import PRODUCER, STAGES

    spec, _ = compiled
    tasks = spec.root.dag.tasks
    for name, task in tasks.items():
        if name == "configure" or name.startswith("merge-features"):
            continue
        stage = STAGES[_stage_of(name)]
        read = {key: (_stage_of(a.task_output_artifact.producer_task), a.task_output_artifact.output_artifact_key)
                for key, a in task.inputs.artifacts.items()}
        assert read == {a: (PRODUCER[a].name, a) for a in stage.inputs}, name
        assert {_stage_of(t) for t in task.dependent_tasks} >= {PRODUCER[a].name for a in stage.inputs}, name
        # The first output of each component is the stage's folder artifact.
        outputs = spec.components[task.component_ref.name].output_definitions.artifacts
        assert stage.output in outputs, name


def test_each_component_gets_its_own_stage_sections(compiled):
    """The KFP front hands each component its declared params keys, like the others."""
    from audioflow.stages import STAGES

    spec, _ = compiled
    outputs = spec.components["comp-configure"].output_definitions.parameters
    assert set(outputs) == {name for name, s in STAGES.items() if not s.per_fold}
    for name, task in spec.root.dag.tasks.items():
        if name == "configure":
            continue
        source = task.inputs.parameters["sections"].task_output_parameter
        stage = _stage_of(name)
        assert (source.producer_task, source.output_parameter_key) == ("configure", stage), name


def test_sections_carry_the_code_each_stage_runs():
    """KFP keys its cache on a task's inputs: each stage's sections hold the digest of the
    audioflow files it runs (what dvc.yaml lists), computed by configure inside the image, so a
    rebuilt image under the same tag reruns what changed. The stages themselves ignore it."""
    from audioflow import stages
    from audioflow.config import load_params
    from audioflow.stages import code_hash
    from pipelines.kubeflow_components import configure

    params = load_params(ROOT / "params.yaml")
    out = configure(json.dumps(params.to_dict()), {}, "data")._asdict()
    for name, sections in out.items():
        assert json.loads(sections)[stages.CODE_KEY] == code_hash(name), name
        assert stages.sections_json(stages.params_from_json(sections), name) == stages.sections_json(params, name)
        keys = {f"{sec}.{k}" for sec, d in json.loads(sections).items() if sec != stages.CODE_KEY for k in d}
        assert keys == {".".join(k.split(".")[:2]) for k in stages.STAGES[name].params}, name
    assert out["featurize"] != out["split"]


def test_kfold_is_refused_with_a_message(tmp_path: Path):
    """Cross-validation runs under the CLI, ZenML and DVC; this front says so instead of
    quietly training one model."""
    p = kubeflow_cli("compile", str(tmp_path / "p.yaml"), "--set", "split.strategy=kfold",
                     "--set", "split.folds=[1,2,3]", cwd=ROOT, check=False)
    assert p.returncode != 0 and not (tmp_path / "p.yaml").exists()
    assert "split.strategy kfold" in p.stderr and "ZenML" in p.stderr, p.stderr[-2000:]


# A train pod: the component's own function, on artifacts in folders, mirroring its checkpoint to
# a checkpoint root. With KILL_AFTER=n the process SIGKILLs itself once the n-th checkpoint is
# in the store (the kill is the only thing this harness adds: an evicted pod).
TRAIN_POD = """
import os, signal, sys
from pathlib import Path
from kfp.dsl import HTML, Dataset, Model
from audioflow import storage
from pipelines import kubeflow_components as kubeflow
root, pod, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if kill_after:
    real, stored = storage.FsspecFolder.rename, []
    def rename(self, src, dst):
        real(self, src, dst)
        stored.append(dst)
        if len(stored) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    storage.FsspecFolder.rename = rename
kubeflow.train(Dataset(uri=str(root / "features")), Dataset(uri=str(root / "split")),
               (root / "sections.json").read_text(), Model(uri=str(pod / "model")),
               HTML(uri=str(pod / "curves.html")), checkpoint_root=str(root / "store"), run_id="run-1")
"""


def test_a_retried_train_pod_resumes_from_the_checkpoint_root(tone_dataset: Path, tmp_path: Path):
    """Killed after its 2nd epoch, the train component's retry (a fresh pod: nothing of the first
    one's disk) resumes from the checkpoint root and ends with the weights of an unbroken run."""
    import torch

    from audioflow import stages
    from audioflow.checkpoint import load_model
    from audioflow.config import load_params

    params = load_params("absent.yaml", {
        "data.root": str(tone_dataset), "data.group_column": "speaker", "features.window_s": 0.5,
        "features.n_mels": 32, "split.val_fraction": 0.2, "split.test_fraction": 0.2,
        "model.cnn.channels": [8, 16], "train.epochs": 4, "train.batch_size": 8, "train.patience": 10})
    root = tmp_path / "run"
    stages.ingest(params, tmp_path / "dataset", progress=False)
    stages.validate(params, tmp_path / "dataset", tmp_path / "validation", progress=False)
    stages.featurize(params, tmp_path / "dataset", tmp_path / "validation", root / "features", progress=False)
    stages.split(params, tmp_path / "dataset", tmp_path / "validation", root / "split")
    (root / "sections.json").write_text(stages.sections_json(params, "train"))
    stored = root / "store" / "run-1" / stages.checkpoint_key(params, root / "features", root / "split")

    def pod(name: str, kill_after: int) -> subprocess.CompletedProcess:
        # Each pod's own temporary directory: a SIGKILLed process cannot clean up after itself
        # (in a cluster its /tmp goes with the pod; here it goes with tmp_path).
        scratch = tmp_path / f"{name}-tmp"
        scratch.mkdir()
        return subprocess.run([sys.executable, "-c", TRAIN_POD, str(root), str(tmp_path / name), str(kill_after)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=os.environ | {"TMPDIR": str(scratch)})

    first = pod("pod-1", kill_after=2)
    assert first.returncode == -9, first.stderr[-3000:]
    assert (stored / "last.pt").is_file() and not (stored / "last.pt.partial").exists()
    retry = pod("pod-2", kill_after=0)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert list((tmp_path / "pod-2-tmp").iterdir()) == []  # a pod that finishes leaves nothing
    summary = json.loads((tmp_path / "pod-2/model/train.json").read_text())
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 4
    assert not stored.exists()  # a finished run leaves nothing to resume

    stages.train(params, root / "features", root / "split", tmp_path / "unbroken", progress=False)
    a, _ = load_model(tmp_path / "unbroken/model")
    b, _ = load_model(tmp_path / "pod-2/model/model")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
