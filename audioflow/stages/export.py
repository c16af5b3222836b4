"""export: the ONNX model (waveform in, calibrated logits out), checked against PyTorch on held-out
audio; optionally its INT8 twin, scored against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.errors import AudioflowError
from audioflow.stages.base import SERVING, Stage, atomic_dir, publish, write_params

if TYPE_CHECKING:
    import numpy as np

    from audioflow.config import Params


def heldout_part(table, part: str = "test") -> str:
    """``part``, or val where the split has no test recordings (kfold's final model: the folds
    measured it, and it never trained on val)."""
    return part if (table["split"] == part).any() else "val"


def heldout_windows(dataset: Path, split: Path, spec, limit: int = 32, part: str = "test") -> list[np.ndarray]:
    """Windows of the recordings of one split part: test audio for the export-time ONNX Runtime
    parity check, validation audio to calibrate INT8 (the test split judges it)."""
    from audioflow import audio
    from audioflow import split as _split
    from audioflow.manifest import Dataset

    ds = Dataset.load(dataset)
    table = _split.load(split)
    windows: list[np.ndarray] = []
    for rel in table.loc[table["split"] == heldout_part(table, part), "path"]:
        signal = audio.load(ds.location(rel), spec.sample_rate)
        windows.extend(audio.frame_windows(signal, spec.window_samples, spec.window_hop_samples))
        if len(windows) >= limit:
            break
    return windows[:limit]


def serving_settings(evaluation: Path) -> dict:
    """The evaluation's ``serving.json``: temperature and operating point for the export."""
    path = evaluation / SERVING
    if not path.is_file():
        raise AudioflowError(f"{path}: not found; run `audioflow evaluate` (it fits the temperature and the "
                             "operating point the exported model carries)")
    return json.loads(path.read_text())


def export(params: Params, trained_model: Path, dataset: Path, split: Path, evaluation: Path, out: Path, *,
           progress: bool = True, publish_to: Path | None = None) -> dict:
    """``out/model.onnx`` checked against PyTorch on test audio, ``export.json``, ``params.json``.

    The graph divides the logits by the temperature evaluate fitted on val (so the probabilities
    ``predict`` and ``serve`` compute are calibrated), and the metadata holds it and the
    operating point. Nothing lands in ``out`` unless ``onnx.checker`` and the parity check passed.
    """
    from audioflow.checkpoint import load_model
    from audioflow.export import export_onnx

    model_dir = trained_model / "model"
    _, meta = load_model(model_dir)
    serving = serving_settings(evaluation)
    check = heldout_windows(dataset, split, meta.spec)
    with atomic_dir(out) as tmp:
        report = export_onnx(model_dir, tmp / "model.onnx", check_audio=check, opset=params.export.opset,
                             atol=params.export.atol, temperature=serving["temperature"],
                             operating_point=serving["operating_point"])
        report["path"] = "model.onnx"  # relative to the stage folder: no temporary path recorded
        if params.export.int8:
            report["int8"] = _int8(params, tmp, dataset, split, meta.spec)
        (tmp / "export.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_params(params, STAGE, tmp)
    publish(STAGE, out, publish_to)
    return report


def _int8(params: Params, folder: Path, dataset: Path, split: Path, spec) -> dict:
    """``folder/model.int8.onnx`` and the test-split macro-F1 of both models, side by side."""
    from audioflow import split as _split
    from audioflow.manifest import Dataset
    from audioflow.quantize import quantize_int8, test_split_scores

    info = quantize_int8(folder / "model.onnx", folder / "model.int8.onnx",
                         heldout_windows(dataset, split, spec, limit=256, part="val"))
    ds, table = Dataset.load(dataset), _split.load(split)
    part = heldout_part(table)
    test = [(ds.location(r.path), r.label) for r in table[table["split"] == part].itertuples()]
    f1_fp32, fp32 = test_split_scores(folder / "model.onnx", test)
    f1_int8, int8 = test_split_scores(folder / "model.int8.onnx", test)
    drop = f1_fp32 - f1_int8
    return info | {"test_macro_f1_fp32": round(f1_fp32, 6), "test_macro_f1_int8": round(f1_int8, 6),
                   "macro_f1_drop": round(drop, 6), "max_drop": params.export.int8_max_drop,
                   "within_target": drop <= params.export.int8_max_drop, "n_test_recordings": len(test),
                   "scored_on": part,
                   "same_label_fraction": round(sum(a == b for a, b in zip(fp32, int8)) / max(len(test), 1), 6)}


def dashboard(out: Path, report: dict, fold: str | None):
    return {"framework": "onnx", "file": "model.onnx",
            **{k: report[k] for k in ("max_abs_diff", "size_bytes", "opset", "temperature")}}, {}


# Reads the evaluation for its serving.json alone: the temperature and operating point go into
# the model, so a change of evaluate.bootstrap or the gate leaves the export as it was.
STAGE = Stage("export", "ONNX export (waveform in, calibrated logits out) with a parity check", export,
              output="onnx_model", folder="export", reads=("export.*",),
              inputs=("trained_model", "dataset", "split", "evaluation"), publishes=(("model.onnx", "model.onnx"),),
              dvc={"files": {"evaluation": SERVING}}, dashboard=dashboard, model=True)
