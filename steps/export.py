from pathlib import Path
from typing import Annotated, Any

from zenml import log_metadata, step

from audioflow import stages
from steps._common import code_policy, params, stage_dir


@step(cache_policy=code_policy("export"))
def export(trained_model: Path, dataset: Path, split: Path, evaluation: Path,
           export_cfg: dict[str, Any]) -> Annotated[Path, "onnx_model"]:
    """ONNX (waveform in, logits / temperature out), checked against PyTorch with ONNX Runtime on
    test audio; the temperature and the operating point come from the evaluation.

    The artifact is the export folder: model.onnx, export.json (the check) and params.json.
    """
    out = stage_dir("export")
    report = stages.export(params(export=export_cfg), trained_model, dataset, split, evaluation, out)
    log_metadata(metadata={k: report[k] for k in ("max_abs_diff", "size_bytes", "opset", "temperature")})
    return out
