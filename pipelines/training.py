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
    """ingest -> validate -> featurize -> split -> train -> evaluate -> export -> publish."""
    if params_path:
        os.environ[PARAMS_ENV] = params_path  # read by the ingest step's cache function
    p = load_params(params_file()).to_dict()
    made = {}  # artifact name -> the step output that holds it
    for stage in STAGES.values():
        # Each step gets the artifacts its stage reads and exactly the params.yaml sections it
        # reads, so a change to one parameter invalidates only the steps that use it (ZenML's
        # cache key includes step parameters), and each stage's params.json matches the CLI's
        # and DVC's. `after`: featurize and split wait for validation.
        out = getattr(steps, stage.name)(*(made[a] for a in stage.inputs),
                                         after=[made[a] for a in stage.after] or None,
                                         **{f"{section}_cfg": p[section] for section in stage.sections})
        made[stage.output] = out[0] if isinstance(out, list | tuple) else out  # first: the folder
    # Never from the cache: a fully cached run still refreshes outputs/.
    steps.publish.with_options(enable_cache=False)(
        **{s.output: made[s.output] for s in STAGES.values() if s.publishes}, outputs=outputs)
