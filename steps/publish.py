from pathlib import Path
from typing import Annotated

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages

from audioflow import promotion, stages
from steps._common import params


@step(enable_cache=False)
def publish(validation: Path, evaluation: Path, onnx_model: Path, dataset: Path, split: Path,
            outputs: str = "outputs") -> Annotated[str, "outputs_dir"]:
    """Copy the files people look at to ``outputs/``; stage the model version, and promote it to
    production unless it is worse than the production version on this run's test split.

    Never cached: a rerun served from the cache still refreshes ``outputs/`` and decides again
    (production may have changed). It runs only after evaluate passed the quality gate.
    """
    out = Path(outputs)
    stages.publish_all({"validation": validation, "evaluation": evaluation, "onnx_model": onnx_model}, out)
    model = get_step_context().model
    if model is not None:
        decision = _promote(model, evaluation, onnx_model, dataset, split)
        promotion.write_decision(decision, out)
    return str(out)  # as given: an artifact holds no path of this machine's working directory


def _promote(model, evaluation: Path, onnx_model: Path, dataset: Path, split: Path) -> dict:
    """Compare with the production version (its ONNX model re-scored on this test split) and
    move the stages; the decision and its figures become model-version and step metadata."""
    import json

    cfg = params(evaluate=json.loads((evaluation / "params.json").read_text())["evaluate"]).evaluate
    metrics = json.loads((evaluation / "metrics.json").read_text())
    model.set_stage(ModelStages.STAGING, force=True)  # passed the gate: a candidate
    try:
        production = Client().get_model_version(model.name, ModelStages.PRODUCTION)
    except KeyError:
        production = None
    loaded, info = None, None
    if production is not None:
        artifact = production.get_artifact("onnx_model")
        # A copy in a temporary folder that ZenML removes when the step ends.
        loaded = Path(artifact.load()) if artifact is not None else None
        info = {"version": production.name, **{k: production.run_metadata.get(k)
                                               for k in ("test_split_hash", "dataset_fingerprint")}}
    decision = promotion.decide(cfg, onnx_model / "model.onnx", loaded / "model.onnx" if loaded else None,
                                dataset, split, metrics, info)
    decision["version"] = str(model.number)
    if decision["promoted"]:
        model.set_stage(ModelStages.PRODUCTION, force=True)
    log_metadata(metadata={"promotion": decision, "promoted": decision["promoted"]}, infer_model=True)
    log_metadata(metadata={"promotion": decision})
    return decision
