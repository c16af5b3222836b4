"""ZenML on Kubeflow (docs/guides/kubeflow.md, "## ZenML on Kubeflow"), tested without a cluster.

configs/kubeflow.yaml is read through ZenML's own configuration models, with every key checked:
ZenML itself ignores unknown keys (and settings for components a stack lacks) with at most a
warning, so a misspelt key would otherwise pass unnoticed and do nothing. The guide's commands
run as written against a local ZenML store in a temporary ZENML_CONFIG_PATH, with a kubeconfig
that names the guide's context; the registered stack must pass ZenML's stack validation, and
the pipeline is compiled with the config on it. What no test can do here is build the image
(no Docker engine) or submit the run (no Kubeflow): the image build is checked at the call where
ZenML hands its build context to Docker, and the train step's resources by applying ZenML's
Kubeflow code to a KFP task and compiling that with KFP.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GUIDE = ROOT / "docs" / "guides" / "kubeflow.md"
CONFIG = ROOT / "configs" / "kubeflow.yaml"
STEPS = ["ingest", "validate", "featurize", "split", "train", "evaluate", "export", "publish"]
RUN_COMMAND = "uv run zenml pipeline run pipelines.training.training_pipeline -c configs/kubeflow.yaml"


def settings_classes() -> dict[str, type[BaseModel]]:
    from zenml.config import DockerSettings, ResourceSettings

    from pipelines.zenml_kubeflow import AudioflowKubeflowOrchestratorSettings

    return {"docker": DockerSettings, "resources": ResourceSettings,
            "orchestrator.audioflow_kubeflow": AudioflowKubeflowOrchestratorSettings}


def models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation admits (through Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def unknown_keys(model: type[BaseModel], data: dict, where: str) -> list[str]:
    """Every key in `data`, at any depth, that `model` has no field for."""
    settings = settings_classes()
    fields = {alias: f for name, f in model.model_fields.items() for alias in (name, f.alias) if alias}
    problems = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            problems.append(path)
            continue
        annotation = fields[key].annotation
        if key == "settings" and isinstance(value, dict):
            for skey, svalue in value.items():
                if skey not in settings:
                    problems.append(f"{path}.{skey} (no settings class for this key)")
                else:
                    problems += unknown_keys(settings[skey], svalue, f"{path}.{skey}")
        elif key == "steps" and isinstance(value, dict):
            from zenml.config.step_configurations import StepConfigurationUpdate

            for step, svalue in value.items():
                if step not in STEPS:
                    problems.append(f"{path}.{step} (no such step)")
                problems += unknown_keys(StepConfigurationUpdate, svalue, f"{path}.{step}")
        elif isinstance(value, dict) and len(models_in(annotation)) == 1:
            problems += unknown_keys(models_in(annotation)[0], value, path)
    return problems


@pytest.mark.parametrize("name", ["kubeflow.yaml", "local.yaml"])
def test_config_loads_through_zenml_with_no_unknown_key(name: str):
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    raw = yaml.safe_load((ROOT / "configs" / name).read_text())
    PipelineRunConfiguration.model_validate(raw)
    for key, cls in settings_classes().items():  # each block through its own class, too
        for block in [raw.get("settings", {})] + [s.get("settings", {}) for s in raw.get("steps", {}).values()]:
            if key in block:
                cls.model_validate(block[key])
    assert unknown_keys(PipelineRunConfiguration, raw, "") == []


def test_the_key_check_catches_misspellings():
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    raw = yaml.safe_load(CONFIG.read_text())
    raw["settings"]["docker"]["dockerfiel"] = "x"
    raw["steps"]["train"]["settings"]["resources"]["gpus"] = 1
    raw["steps"]["trian"] = {}
    raw["steps"]["train"]["settings"]["orchestrator.audioflow_kubeflow"]["pod_settings"]["node_selector"] = {}
    raw["settings"]["orchestrator.kubflow"] = {}
    PipelineRunConfiguration.model_validate(raw)  # ZenML itself takes all of these
    assert unknown_keys(PipelineRunConfiguration, raw, "") == [
        "settings.docker.dockerfiel", "settings.orchestrator.kubflow (no settings class for this key)",
        "steps.train.settings.resources.gpus",
        "steps.train.settings.orchestrator.audioflow_kubeflow.pod_settings.node_selector", "steps.trian (no such step)"]


def test_kubeflow_config_says_what_the_readme_says():
    from zenml.config import DockerSettings, ResourceSettings

    raw = yaml.safe_load(CONFIG.read_text())
    local = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    assert raw["model"] == local["model"] and raw["enable_step_logs"] == local["enable_step_logs"]
    docker = DockerSettings.model_validate(raw["settings"]["docker"])
    assert (ROOT / docker.build_context_root / docker.dockerfile) == ROOT / "docker" / "Dockerfile"
    assert (ROOT / docker.build_context_root / ".dockerignore").is_file()
    # The image is used as built: nothing that would make ZenML build a layer on top of it.
    assert not (docker.install_stack_requirements or docker.requirements or docker.required_integrations
                or docker.apt_packages or docker.environment or docker.local_project_install_command
                or docker.pyproject_path or docker.replicate_local_python_environment)
    assert docker.allow_download_from_artifact_store and not docker.allow_including_files_in_images
    # The steps find the params.yaml that travelled with the code.
    assert raw["environment"]["AUDIOFLOW_PARAMS"] == "/app/code/params.yaml"
    resources = {s: ResourceSettings.model_validate(c.get("settings", {}).get("resources", {}))
                 for s, c in raw["steps"].items()}
    assert resources["train"].gpu_count == 1 and resources["train"].memory == "16GB"
    assert all(not r.gpu_count for s, r in resources.items() if s != "train")


def kfp_resources(resource_settings, accelerator: str | None, stock: bool = False) -> dict:
    """The KFP 2 resources of a task after the audioflow_kubeflow orchestrator (or ZenML's stock
    Kubeflow orchestrator) has configured it."""
    import tempfile

    from kfp import compiler, dsl
    from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator

    from pipelines.zenml_kubeflow import AudioflowKubeflowOrchestrator

    orchestrator = KubeflowOrchestrator if stock else AudioflowKubeflowOrchestrator

    @dsl.container_component
    def step():
        return dsl.ContainerSpec(image="audioflow-steps", command=["python"])

    @dsl.pipeline(name="resources")
    def pipeline():
        task = step()
        constraint = ("accelerator", accelerator) if accelerator else None
        orchestrator._configure_container_resources(None, task, resource_settings, constraint)

    with tempfile.TemporaryDirectory() as d:
        compiler.Compiler().compile(pipeline, f"{d}/p.yaml")
        spec = yaml.safe_load(Path(f"{d}/p.yaml").read_text())
    return spec["deploymentSpec"]["executors"]["exec-step"]["container"].get("resources", {})


def test_the_flavor_passes_memory_to_kfp_as_a_quantity():
    from zenml.config import ResourceSettings

    got = kfp_resources(ResourceSettings(memory="16GB", cpu_count=4), None)
    assert got["resourceMemoryLimit"] == got["resourceMemoryRequest"] == "16G", got


def test_stock_zenml_still_has_both_defects():
    """Why pipelines/zenml_kubeflow.py exists. When this fails, ZenML has fixed them: register
    the stock `kubeflow` flavor in the guide and drop the module."""
    from zenml.config import ResourceSettings
    from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import KubeflowOrchestratorSettings

    stock = KubeflowOrchestratorSettings(pod_settings={"node_selectors": {"accelerator": "nvidia.com/gpu"}})
    assert stock.pod_settings.node_selectors == {}  # the GPU's node selector is lost
    with pytest.raises(TypeError):
        kfp_resources(ResourceSettings(memory="16GB"), None, stock=True)


# --- the guide's commands, for real ----------------------------------------------------------

def readme_commands() -> list[str]:
    section = GUIDE.read_text().split("\n## ZenML on Kubeflow\n", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    assert block, "no console block under '## ZenML on Kubeflow' in docs/guides/kubeflow.md"
    return [line[2:].partition(" #")[0].strip() for line in block.group(1).splitlines() if line.startswith("$ ")]


def test_readme_block_registers_a_kubeflow_stack_then_runs_the_config():
    commands = readme_commands()
    assert all(c.startswith("uv run zenml ") for c in commands)
    assert commands[-1] == RUN_COMMAND
    joined = "\n".join(commands)
    for flavor in ("orchestrator flavor register pipelines.zenml_kubeflow.AudioflowKubeflowOrchestratorFlavor",
                   "orchestrator register kubeflow -f audioflow_kubeflow", "artifact-store register s3_store -f s3",
                   "container-registry register", "image-builder register"):
        assert flavor in joined


COMPILE = r"""
import json, sys, yaml
from pathlib import Path
from zenml.client import Client
from zenml.config.compiler import Compiler
from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
from zenml.image_builders.local_image_builder import LocalImageBuilder
from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder
from pipelines.training import training_pipeline
from tests.test_zenml_kubeflow import kfp_resources

client = Client()
stack = client.active_stack
stack.validate()  # what `zenml pipeline run` checks first: here, the kube context too
store = stack.artifact_store
facts = {
    "stack": stack.name,
    "flavors": {c.type.value: c.flavor for c in stack.components.values()},
    "s3_credentials": [bool(v) for v in store.get_credentials()[:2]],
    "registry": stack.container_registry.config.uri,
}
config = PipelineRunConfiguration.model_validate(yaml.safe_load(Path("configs/kubeflow.yaml").read_text()))
pipeline = training_pipeline.with_options()
pipeline.prepare()
snapshot = Compiler().compile(pipeline=pipeline, stack=stack, run_configuration=config)
steps = snapshot.step_configurations
facts["steps"] = list(steps)
facts["environment"] = {n: s.config.environment for n, s in steps.items()}
facts["resources"] = {n: s.config.resource_settings.model_dump(include={"cpu_count", "gpu_count", "memory"})
                      for n, s in steps.items()}

# The image build, up to the point where ZenML hands a build context to Docker.
builds = []
def docker_build(self, image_name, build_context, docker_build_options=None, container_registry=None, **kw):
    builds.append({"image": image_name, "dockerfile": build_context.get_extra_files().get("Dockerfile"),
                   "files": sorted(build_context.get_files()),
                   "push_to": container_registry.config.uri if container_registry else None})
    return image_name
LocalImageBuilder.build = docker_build
configs = stack.get_docker_builds(snapshot)
facts["build_configs"] = len(configs)
for b in configs:
    PipelineDockerImageBuilder().build_docker_image(
        docker_settings=b.settings, tag="test", stack=stack, include_files=b.should_include_files(None),
        entrypoint=b.entrypoint, extra_files=b.extra_files, extra_requirements_files=b.extra_requirements_files)
facts["builds"] = builds

# The train step's KFP resources, as KubeflowOrchestrator.submit_pipeline derives them.
train = steps["train"]
selectors = stack.orchestrator.get_settings(train).pod_settings.node_selectors
facts["train_node_selectors"] = selectors
facts["train_kfp"] = kfp_resources(train.config.resource_settings, selectors.get("accelerator"))
print("FACTS " + json.dumps(facts, default=str))
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """The guide's commands in a fresh project, then the checks of COMPILE on the stack they made."""
    root = tmp_path_factory.mktemp("kubeflow-project")
    for d in ("steps", "pipelines", "configs", "docker", "audioflow"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tests").mkdir()
    for f in ("params.yaml", "pyproject.toml", "uv.lock", "README.md", ".dockerignore",
              "tests/__init__.py", "tests/test_zenml_kubeflow.py"):
        shutil.copyfile(ROOT / f, root / f)
    (root / "data" / "recordings").mkdir(parents=True)  # must stay out of the image build
    (root / "data" / "recordings" / "a.wav").write_bytes(b"RIFF")
    (root / "tmp").mkdir()

    commands = readme_commands()
    context = re.search(r"--kubernetes_context=(\S+)", "\n".join(commands)).group(1)
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "placeholder", "user": {"token": "placeholder"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": "placeholder"}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENML_", "AWS_", "KUBE"))} | {
        "ZENML_CONFIG_PATH": str(root / ".zenml-config"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "KUBECONFIG": str(kubeconfig),
        "AWS_ACCESS_KEY_ID": "placeholder-key-id",
        "AWS_SECRET_ACCESS_KEY": "placeholder-secret",
        "TMPDIR": str(root / "tmp"),
        "NO_COLOR": "1",
        "PYTHONPATH": str(root),
    }
    log = []
    for command in commands[:-1]:  # the last one needs Docker and a cluster
        argv = shlex.split(command)
        assert argv[:2] == ["uv", "run"]
        # As a shell runs it ("$AWS_ACCESS_KEY_ID" expands), with this environment's executables.
        line = f"exec {shlex.quote(str(BIN / argv[2]))} {command.split(' ', 3)[3]}"
        p = subprocess.run(["bash", "-c", line], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{command}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        log.append(p.stdout + p.stderr)
    p = subprocess.run([sys.executable, "-c", COMPILE], cwd=root, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "FACTS " in p.stdout, p.stdout[-3000:] + p.stderr[-5000:]
    facts = json.loads(p.stdout.split("FACTS ", 1)[1])
    facts["log"], facts["left_in_tmp"] = "\n".join(log) + p.stderr, sorted(os.listdir(root / "tmp"))
    return facts


@pytest.mark.slow
def test_readme_commands_register_a_valid_kubeflow_stack(registered: dict):
    assert registered["stack"] == "kubeflow"
    assert registered["flavors"].items() >= {"orchestrator": "audioflow_kubeflow", "artifact_store": "s3",
                                             "container_registry": "default", "image_builder": "local"}.items()
    assert registered["s3_credentials"] == [True, True]  # the secret is there and has both keys
    assert registered["left_in_tmp"] == []


@pytest.mark.slow
def test_pipeline_compiles_for_kubeflow_with_the_config(registered: dict):
    assert registered["steps"] == STEPS
    assert "Ignoring invalid setting" not in registered["log"]
    assert all(e == {"AUDIOFLOW_PARAMS": "/app/code/params.yaml"} for e in registered["environment"].values())
    res = registered["resources"]
    assert res["train"] == {"cpu_count": 4.0, "gpu_count": 1, "memory": "16GB"}
    assert all(r == {"cpu_count": None, "gpu_count": None, "memory": None} for s, r in res.items() if s != "train")


@pytest.mark.slow
def test_zenml_builds_exactly_docker_dockerfile(registered: dict):
    """One image for every step, from docker/Dockerfile unchanged: ZenML adds no layer (a layer of
    its own would `chmod` root-owned files as the image's non-root user and fail)."""
    assert registered["build_configs"] == 1
    [build] = registered["builds"]
    assert build["dockerfile"] == (ROOT / "docker" / "Dockerfile").read_text()
    assert build["push_to"] == registered["registry"]
    assert build["image"].startswith(f"{registered['registry']}/audioflow:")
    files = build["files"]
    assert {"pyproject.toml", "uv.lock", "README.md", "audioflow/cli/__init__.py"} <= set(files)
    assert not any(f == "data" or f.startswith("data/") for f in files)


@pytest.mark.slow
def test_train_step_gets_its_cpus_on_kubeflow(registered: dict):
    assert registered["train_kfp"]["resourceCpuLimit"] == "4.0"


@pytest.mark.slow
def test_train_step_gets_a_gpu_on_kubeflow(registered: dict):
    assert registered["train_node_selectors"] == {"accelerator": "nvidia.com/gpu"}
    accelerator = registered["train_kfp"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"


@pytest.mark.slow
def test_train_step_gets_its_memory_on_kubeflow(registered: dict):
    assert registered["train_kfp"]["resourceMemoryLimit"] == registered["train_kfp"]["resourceMemoryRequest"] == "16G"
