"""The Kubeflow Pipelines front: one containerized component per stage, wiring only.

    python -m pipelines.kubeflow_cli compile audioflow-pipeline.yaml # the IR YAML to upload to a cluster

Every component is generated from its stage's declaration (``pipelines/kubeflow_components.py``,
``python -m audioflow.stages.generate``) and calls ``audioflow.stages`` inside the steps image
built from ``docker/Dockerfile``; the image, secrets, resources and retries come from
``configs/kfp.yaml`` and the hyperparameters from ``params.yaml`` (compiled in as the default of
the ``params_yaml`` pipeline parameter). Run-time parameters: ``data_root`` (a folder or an
object-store URL such as ``s3://bucket/recordings``), ``overrides`` (``{"train.lr": 0.001}``) and
``checkpoint_root`` (where train keeps its resumable checkpoint, per run; default from
``configs/kfp.yaml``).

A ``configure`` task turns those into the sections each stage reads (``audioflow.stages.STAGES``),
so KFP's cache key of a stage changes only when its own sections or inputs change.
``features.shards: N`` fans featurize out over N tasks built here in the pipeline function
(not ``dsl.ParallelFor``, which ``kfp.local`` 2.17 cannot run), merged pairwise, in order,
into the same bytes as one featurize.
"""

import json
import re
from pathlib import Path
from typing import NamedTuple

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input, Model, Output
from pydantic import BaseModel, ConfigDict, Field

from audioflow.config import Params, load_params
from audioflow.errors import AudioflowError
from audioflow.stages import plan
from pipelines import kubeflow_components

PIPELINE_NAME = "audioflow-training"
# On every container of `run_local(image=...)`, valued with the run's pipeline root.
CONTAINER_LABEL = "io.audioflow.pipeline-root"


# --------------------------------------------------------------------------- settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    cpu: str = "1"  # Kubernetes quantities
    memory: str = "4Gi"
    gpu: int = Field(0, ge=0)
    accelerator: str = "nvidia.com/gpu"


class Retry(_Strict):
    count: int = Field(2, ge=0)
    backoff: str = "30s"
    factor: float = Field(2.0, ge=1)


class KfpSettings(_Strict):
    """configs/kfp.yaml: where and how the steps run on a cluster."""

    image: str
    caching: bool = True
    retry: Retry = Retry()
    s3_secret: str | None = "audioflow-s3"
    s3_secret_env: dict[str, str] = {}
    # Where train mirrors its checkpoint after every epoch (object storage the pods can write,
    # e.g. s3://bucket/audioflow-checkpoints), so a retried pod resumes; empty: not mirrored.
    checkpoints: str = ""
    resources: dict[str, Resources] = {}

    def resources_for(self, stage: str) -> Resources:
        return self.resources.get(stage, self.resources.get("default", Resources()))


def load_settings(path: str | Path = "configs/kfp.yaml", image: str | None = None) -> KfpSettings:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if image:
        raw["image"] = image
    return KfpSettings.model_validate(raw)


# --------------------------------------------------------------------------- components
# A component per stage, and configure (the sections each stage reads), are generated from the
# declarations (pipelines/kubeflow_components.py); the sharded featurize's merge is this front's
# own. Lightweight components: KFP ships each function's source to the image, so each one
# imports what it uses inside its body.


def merge_features(sections: str, first: Input[Dataset], second: Input[Dataset], features: Output[Dataset]):
    from pathlib import Path

    from audioflow import stages

    stages.merge_features(stages.params_from_json(sections), [Path(first.path), Path(second.path)],
                          Path(features.path))


# --------------------------------------------------------------------------- pipeline


def build_pipeline(params: Params, settings: KfpSettings):
    """The pipeline function for these compile-time params (shard count) and settings.

    The wiring follows the stage declarations (``audioflow.stages.STAGES``): each component gets
    the artifacts its stage reads, under the same names, and waits for its ``after`` gate.
    Cross-validation (``split.strategy: kfold``, the per-fold stages) runs under ZenML, DVC and
    the CLI, not yet here.
    """
    if params.split.strategy == "kfold":
        raise AudioflowError("split.strategy kfold (cross-validation) runs with `audioflow run`, ZenML and "
                             "`dvc repro`; the Kubeflow pipeline trains one model: use stratified or predefined")
    # configure, the sharded featurize's merge, and the component named after each stage in plan()
    fns = [kubeflow_components.configure, merge_features] + [getattr(kubeflow_components, task.stage.name)
                                                            for task in plan()]
    component = {fn.__name__: dsl.component(fn, base_image=settings.image, install_kfp_package=False) for fn in fns}

    def step(name: str, stage: str, **inputs) -> dsl.PipelineTask:
        task = component[name](**inputs).set_display_name(stage)
        r = settings.resources_for(stage)
        task.set_cpu_request(r.cpu).set_memory_request(r.memory)
        if r.gpu:
            task.set_accelerator_type(r.accelerator).set_accelerator_limit(r.gpu)
        task.set_caching_options(settings.caching)
        if settings.retry.count:
            task.set_retry(num_retries=settings.retry.count, backoff_duration=settings.retry.backoff,
                           backoff_factor=settings.retry.factor)
        if settings.s3_secret and settings.s3_secret_env:
            kubernetes.use_secret_as_env(task, secret_name=settings.s3_secret,
                                         secret_key_to_env=settings.s3_secret_env, optional=True)
        return task

    n_shards = params.features.shards

    def featurize_sharded(sections, **inputs):
        """N featurize tasks merged pairwise, in order: a log-depth tree of merges."""
        tasks = [step("featurize", "featurize", sections=sections, shard=i, n_shards=n_shards, **inputs)
                 .set_display_name(f"featurize-{i + 1}-of-{n_shards}") for i in range(n_shards)]
        parts, level = [t.outputs["features"] for t in tasks], 0
        while len(parts) > 1:
            level += 1
            merged = [step("merge_features", "featurize", sections=sections, first=a, second=b)
                      .set_display_name(f"merge-features-{level}-{i + 1}").outputs["features"]
                      for i, (a, b) in enumerate(zip(parts[0::2], parts[1::2]))]
            parts = merged + parts[len(merged) * 2:]
        return tasks, parts[0]

    @dsl.pipeline(name=PIPELINE_NAME, description="ingest -> validate -> featurize -> split -> train -> "
                                                  "evaluate -> export (audioflow)")
    def audioflow_pipeline(data_root: str = params.data.root, overrides: dict = {},  # noqa: B006
                           # One line: KFP copies defaults into the YAML's header comment, and a
                           # multi-line string there breaks the file (JSON is YAML too).
                           params_yaml: str = json.dumps(params.to_dict()),
                           checkpoint_root: str = settings.checkpoints, checkpoint_run: str = "",
                           ) -> NamedTuple("Outputs", [("features", Dataset), ("evaluation", Dataset),
                                                       ("onnx_model", Model)]):
        sections = step("configure", "configure", params_yaml=params_yaml, overrides=overrides,
                        data_root=data_root).set_caching_options(False).outputs
        made = {}  # artifact name -> task output
        extra = {"train": {"checkpoint_root": checkpoint_root, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                           "checkpoint_run": checkpoint_run}}
        for task in plan():
            stage = task.stage
            inputs = {a: made[a] for a, _ in task.inputs} | extra.get(stage.name, {})
            if stage.name == "featurize" and n_shards > 1:
                _, made[stage.output] = featurize_sharded(sections[stage.name], **inputs)
            else:
                made[stage.output] = step(stage.name, stage.name, sections=sections[stage.name],
                                          **inputs).outputs[stage.output]
        return NamedTuple("Outputs", [("features", Dataset), ("evaluation", Dataset), ("onnx_model", Model)])(
            made["features"], made["evaluation"], made["onnx_model"])

    return audioflow_pipeline


def compile_pipeline(out: str | Path, params_path: str | Path = "params.yaml", overrides: dict | None = None,
                     settings_path: str | Path = "configs/kfp.yaml", image: str | None = None) -> Path:
    """Write the pipeline's IR YAML, the file a Kubeflow Pipelines cluster runs."""
    from kfp import compiler

    params = load_params(params_path, overrides)
    pipeline = build_pipeline(params, load_settings(settings_path, image))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, package_path=str(out))
    return out


def run_local(pipeline_root: str | Path, data_root: str, params_path: str | Path = "params.yaml",
              overrides: dict | None = None, settings_path: str | Path = "configs/kfp.yaml",
              image: str | None = None, checkpoint_root: str | None = None,
              checkpoint_run: str = "") -> dict[str, Path]:
    """Run the same pipeline on this machine under ``kfp.local`` (no cluster).

    Without ``image`` each component runs as a subprocess of this Python environment. With
    ``image`` (the steps image, e.g. ``localhost/audioflow-steps:dev``) each one runs in its own
    container of that image through ``kfp.local.DockerRunner`` (Docker, or podman's Docker API
    through ``DOCKER_HOST``), as the image's user, on the host's network so that an object store
    on 127.0.0.1 answers, with the host's ``AWS_*`` variables: it sees only its image, the
    pipeline root (mounted at the same path) and the data URL. KFP's local runner ignores
    resources, retries, caching and secrets. A subprocess component writes its source to a
    ``mktemp -d`` folder (harmless in a pod, left behind here), so the run gets a private
    temporary directory that goes with it.
    """
    import os
    import tempfile

    from kfp import local

    params = load_params(params_path, overrides)
    pipeline = build_pipeline(params, load_settings(settings_path, image))
    pipeline_root = Path(pipeline_root).resolve()
    if image:
        # The image's user (uid 1000) writes the artifacts into the mounted pipeline root.
        pipeline_root.mkdir(parents=True, exist_ok=True)
        pipeline_root.chmod(0o777)
        passed = ("AWS_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
        env = {k: v for k, v in os.environ.items() if k.startswith(passed)}
        # The command KFP gives a component is the container's whole command line, as on a
        # cluster (where it replaces the entrypoint): /usr/bin/env stands in for the image's
        # `audioflow` entrypoint. A read-only root: a component writes only to the pipeline
        # root and /tmp, as in a pod with a read-only root filesystem.
        runner = local.DockerRunner(network_mode="host", environment=env, entrypoint=["/usr/bin/env"],
                                    read_only=True, tmpfs={"/tmp": "rw,size=2g"},
                                    labels={CONTAINER_LABEL: str(pipeline_root)})
    else:
        runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    run_args = {"data_root": data_root, "overrides": dict(overrides or {}), "checkpoint_run": checkpoint_run}
    if checkpoint_root is not None:
        run_args["checkpoint_root"] = checkpoint_root
    before = os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="audioflow-kfp-local-") as scratch:
        os.environ["TMPDIR"] = scratch
        try:
            task = pipeline(**run_args)
            outputs = {name: Path(artifact.path) for name, artifact in task.outputs.items()}
        except (ValueError, KeyError, RuntimeError) as exc:
            failed = _failed_task(str(exc))
            if failed is None:
                raise
            raise AudioflowError(f"Kubeflow task {failed!r} failed: its log is above") from None
        finally:
            if before is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = before
    return outputs


def _failed_task(message: str) -> str | None:
    """The task a kfp.local error names, or None. kfp.local's DockerRunner reads a container's
    exit code after the container was auto-removed, so a failed component can read as a success
    without outputs, and the pipeline fails where the next task looks for them."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)  # kfp colours its names
    m = (re.search(r"from task '([^']+)', but task '\1' not found", message)
         or re.search(r"Inner task failed: ([\w-]+)", message))
    return m.group(1) if m else None
