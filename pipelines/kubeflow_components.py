"""The Kubeflow Pipelines components, one per stage (not the per-fold ones).

Generated from the stage declarations (audioflow/stages/) by

    uv run python -m audioflow.stages.generate --write

Do not edit by hand: change a stage's declaration, then run that (tests/test_stage_contract.py
fails while this file differs from what it writes).
"""

# Lightweight components: KFP runs each function's source text alone in the steps image,
# so each imports what it uses inside its body.
from typing import NamedTuple

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

__all__ = ["configure", "ingest", "validate", "featurize", "split", "train", "evaluate", "export"]


# Its outputs are spelled out: KFP runs this source text alone in the pod.
def configure(
    params_yaml: str,
    overrides: dict,
    data_root: str,
) -> NamedTuple("Sections", [
    ("ingest", str),
    ("validate", str),
    ("featurize", str),
    ("split", str),
    ("train", str),
    ("evaluate", str),
    ("export", str),
]):
    """the params.yaml keys each stage reads, with the run's overrides and data root, and the digest of the code
    each stage runs in this image (never cached, so a rebuilt image under the same tag reruns exactly the stages
    whose code changed)."""
    from audioflow.stages.orchestrated import kfp_sections

    return kfp_sections(params_yaml, overrides, data_root)


def ingest(
    sections: str,
    dataset: Output[Dataset],
):
    """find recordings and labels, hash their content."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("ingest", args)


def validate(
    dataset: Input[Dataset],
    sections: str,
    validation: Output[Dataset],
    validation_report: Output[HTML],
):
    """check every recording (Great Expectations)."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("validate", args)


def featurize(
    dataset: Input[Dataset],
    validation: Input[Dataset],
    sections: str,
    features: Output[Dataset],
    shard: int = 0,
    n_shards: int = 1,
):
    """decode, resample, window and compute log-mel features."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("featurize", args)


def split(
    dataset: Input[Dataset],
    validation: Input[Dataset],
    sections: str,
    split: Output[Dataset],
):
    """stratified, group-aware train/val/test split."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("split", args)


def train(
    features: Input[Dataset],
    split: Input[Dataset],
    sections: str,
    trained_model: Output[Model],
    training_curves: Output[HTML],
    checkpoint_root: str = "",
    run_id: str = "",
    checkpoint_run: str = "",
):
    """train the model, keep the best checkpoint (resumes after a crash)."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("train", args)


def evaluate(
    features: Input[Dataset],
    split: Input[Dataset],
    trained_model: Input[Model],
    sections: str,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    roc_curve: Output[ClassificationMetrics],
    curves: Output[HTML],
    model_card: Output[Markdown],
):
    """test-set metrics with bootstrap intervals (under kfold: every fold's, mean and std), confusion matrix,
    ROC and precision-recall curves, calibration (temperature fitted on val), the operating point, predictions,
    the model card."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("evaluate", args)


def export(
    trained_model: Input[Model],
    dataset: Input[Dataset],
    split: Input[Dataset],
    evaluation: Input[Dataset],
    sections: str,
    onnx_model: Output[Model],
):
    """ONNX export (waveform in, calibrated logits out) with a parity check."""
    args = dict(locals())  # first: only the arguments
    from audioflow.stages.orchestrated import kfp_task

    kfp_task("export", args)
