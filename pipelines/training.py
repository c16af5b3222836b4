"""The ZenML training pipeline: wiring only. Hyperparameters come from params.yaml.

    zenml init
    zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml
"""

import os

from zenml import pipeline

from audioflow.config import load_params
from steps import evaluate, export, featurize, ingest, publish, split, train, validate
from steps._common import PARAMS_ENV, params_file


@pipeline
def training_pipeline(params_path: str | None = None, outputs: str = "outputs") -> None:
    """ingest -> validate -> featurize -> split -> train -> evaluate -> export -> publish."""
    if params_path:
        os.environ[PARAMS_ENV] = params_path  # read by the ingest step's cache function
    # Each step gets only the sections it reads, so a change to one parameter invalidates
    # only the steps that use it (ZenML's cache key includes step parameters).
    p = load_params(params_file()).to_dict()
    dataset = ingest(data_cfg=p["data"])
    validated, validation, _ = validate(dataset, validate_cfg=p["validate"])
    features = featurize(validated, features_cfg=p["features"])
    assignment = split(validated, split_cfg=p["split"])
    model, _ = train(features, assignment, model_cfg=p["model"], train_cfg=p["train"])
    evaluation, _, _ = evaluate(features, assignment, model, evaluate_cfg=p["evaluate"])
    onnx = export(model, validated, assignment, export_cfg=p["export"])
    # Never from the cache: a fully cached run still refreshes outputs/.
    publish.with_options(enable_cache=False)(validation, evaluation, onnx, outputs=outputs)
