"""The ZenML training pipeline: wiring only, from the stage declarations (audioflow.stages.STAGES).

    zenml init
    zenml pipeline run pipelines.training.training_pipeline -c configs/local.yaml
"""

import os

from zenml import pipeline

import steps
from audioflow.config import load_params
from audioflow.stages import STAGES
from steps._common import PARAMS_ENV, params_file


@pipeline
def training_pipeline(params_path: str | None = None, outputs: str = "outputs") -> None:
    """ingest -> validate -> featurize -> split -> [train_fold, evaluate_fold per fold] -> train ->
    evaluate -> export -> publish."""
    if params_path:
        os.environ[PARAMS_ENV] = params_path  # read by the ingest step's cache function
    params = load_params(params_file())
    p, folds = params.to_dict(), params.split.fold_names
    made = {}  # artifact name -> the step output that holds it ({fold: output} for per-fold ones)
    for stage in STAGES.values():
        # Each step gets the artifacts its stage reads and exactly the params.yaml sections it
        # reads, so a change to one parameter invalidates only the steps that use it (ZenML's
        # cache key includes step parameters), and each stage's params.json matches the CLI's
        # and DVC's. `after`: featurize and split wait for validation. Per-fold stages (kfold)
        # run once per fold, as steps named <stage>_<fold>.
        sections = {f"{section}_cfg": p[section] for section in stage.sections}
        extra = {f"{stage.reads_folds}s": list(made[stage.reads_folds].values())} if stage.reads_folds and folds else {}
        for fold in folds if stage.per_fold else [None]:
            inputs = [made[a][fold] if isinstance(made[a], dict) else made[a] for a in stage.inputs]
            by_fold = {"fold": fold, "id": f"{stage.name}_{fold}"} if fold is not None else {}
            out = getattr(steps, stage.name)(*inputs, after=[made[a] for a in stage.after] or None,
                                             **sections, **extra, **by_fold)
            out = out[0] if isinstance(out, list | tuple) else out  # first: the folder
            made[stage.output] = made.get(stage.output, {}) | {fold: out} if fold is not None else out
    # Never from the cache: a fully cached run still refreshes outputs/ and decides the promotion
    # (which re-scores the production model on this run's test split: the dataset and split).
    steps.publish.with_options(enable_cache=False)(
        **{s.output: made[s.output] for s in STAGES.values() if s.publishes}, dataset=made["dataset"],
        split=made["split"], outputs=outputs)
