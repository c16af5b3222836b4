"""The ZenML training pipeline: wiring only. Hyperparameters come from params.yaml.

    zenml init
    zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml
"""

import os

from zenml import pipeline

from audioflow.config import load_params
from audioflow.stages import PARAMS
from steps import evaluate, export, featurize, ingest, publish, split, train, validate
from steps._common import PARAMS_ENV, params_file


@pipeline
def training_pipeline(params_path: str | None = None, outputs: str = "outputs") -> None:
    """ingest -> validate -> featurize -> split -> train -> evaluate -> export -> publish."""
    if params_path:
        os.environ[PARAMS_ENV] = params_path  # read by the ingest step's cache function
    # Each step gets exactly the sections its stage reads (audioflow.stages.PARAMS), so a change
    # to one parameter invalidates only the steps that use it (ZenML's cache key includes step
    # parameters), and each stage's params.json matches the CLI's and DVC's.
    p = load_params(params_file()).to_dict()

    def cfg(stage: str) -> dict:
        return {f"{section}_cfg": p[section] for section in PARAMS[stage]}

    dataset = ingest(**cfg("ingest"))
    validated, validation, _ = validate(dataset, **cfg("validate"))
    features = featurize(validated, **cfg("featurize"))
    assignment = split(validated, **cfg("split"))
    model, _ = train(features, assignment, **cfg("train"))
    evaluation, _, _ = evaluate(features, assignment, model, **cfg("evaluate"))
    onnx = export(model, validated, assignment, **cfg("export"))
    # Never from the cache: a fully cached run still refreshes outputs/.
    publish.with_options(enable_cache=False)(validation, evaluation, onnx, outputs=outputs)
