from pathlib import Path
from typing import Annotated

from zenml import get_step_context, step
from zenml.enums import ModelStages

from audioflow import stages


@step(enable_cache=False)
def publish(validation: Path, evaluation: Path, onnx_model: Path,
            outputs: str = "outputs") -> Annotated[str, "outputs_dir"]:
    """Copy the files people look at to ``outputs/`` and promote the model version.

    Never cached: a rerun served from the cache still refreshes ``outputs/``. It runs only
    after evaluate passed the quality gate, so only a good model is promoted.
    """
    out = Path(outputs)
    stages.publish_all({"validation": validation, "evaluation": evaluation, "onnx_model": onnx_model}, out)
    model = get_step_context().model
    if model is not None:
        model.set_stage(ModelStages.STAGING, force=True)
    return str(out)  # as given: an artifact holds no path of this machine's working directory
