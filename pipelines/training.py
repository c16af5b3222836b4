"""The ZenML training pipeline: wiring only, over the stage loop ``audioflow.stages.plan``.

    zenml init
    zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml
"""

import os

from zenml import pipeline

import steps
from audioflow.config import load_params
from audioflow.stages import STAGES, plan
from steps._common import PARAMS_ENV, params_file


@pipeline
def training_pipeline(params_path: str | None = None, outputs: str = "outputs") -> None:
    """ingest -> validate -> featurize -> split -> [train_fold, evaluate_fold per fold] -> train ->
    evaluate -> export -> publish."""
    if params_path:
        os.environ[PARAMS_ENV] = params_path  # read by the ingest step's cache function
    params = load_params(params_file())
    made = {}  # (artifact, fold) -> the step output that holds it
    for task in plan(params.split.fold_names):
        # Each step gets the artifacts its stage reads and exactly the params.yaml keys it reads
        # (as one <section>_cfg dict per section), so a change to one parameter invalidates only
        # the steps that use it (ZenML's cache key includes step parameters), and each stage's
        # params.json matches the CLI's and DVC's. Per-fold stages (kfold) run once per fold, as
        # steps named <stage>_<fold>.
        stage = task.stage
        sections = {f"{section}_cfg": keys for section, keys in stage.picked(params).items()}
        extra = {f"{stage.reads_folds}s": [made[ref] for ref in task.fold_inputs]} if task.fold_inputs else {}
        by_fold = {"fold": task.fold, "id": task.id} if task.fold is not None else {}
        out = getattr(steps, stage.name)(*(made[ref] for ref in task.inputs), **sections, **extra, **by_fold)
        made[task.ref] = out[0] if isinstance(out, list | tuple) else out  # first: the folder
    # Never from the cache: a fully cached run still refreshes outputs/ and decides the promotion
    # (which re-scores the production model on this run's test split: the dataset and split).
    steps.publish.with_options(enable_cache=False)(
        **{s.output: made[s.output, None] for s in STAGES.values() if s.publishes}, dataset=made["dataset", None],
        split=made["split", None], outputs=outputs)
