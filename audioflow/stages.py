"""Stage functions: read a stage's inputs from folders, call the library, write its outputs.

The CLI, ``dvc.yaml``, the ZenML steps and the KFP components all call these, so the three
ways of running the pipeline cannot drift apart. Each stage writes the parameters it used
(``params.json``) beside its outputs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioflow.config import Params


@dataclass(frozen=True)
class Layout:
    """Where each stage writes. Intermediate artifacts vs. the files people look at."""

    artifacts: Path = Path("artifacts")
    outputs: Path = Path("outputs")

    @property
    def ingest(self) -> Path:
        return self.artifacts / "ingest"

    @property
    def validate(self) -> Path:
        return self.artifacts / "validate"

    @property
    def features(self) -> Path:
        return self.artifacts / "features"

    @property
    def split(self) -> Path:
        return self.artifacts / "split"

    @property
    def train(self) -> Path:
        return self.artifacts / "train"

    @property
    def model_dir(self) -> Path:
        return self.train / "model"

    @property
    def onnx(self) -> Path:
        return self.outputs / "model.onnx"


def _write_params(params: Params, out: Path, *sections: str, **resolved) -> None:
    out.mkdir(parents=True, exist_ok=True)
    d = params.to_dict()
    body = {k: d[k] for k in sections} | ({"resolved": resolved} if resolved else {})
    (out / "params.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def ingest(params: Params, out: Path, progress: bool = True):
    from audioflow.manifest import ingest as _ingest

    ds = _ingest(params.data, progress=progress)
    ds.save(out)
    _write_params(params, out, "data")
    return ds


def validate(params: Params, ingest_dir: Path, out: Path, report_copy: Path | None = None,
             progress: bool = True):
    """Validate; write report.json/.html (and a copy for people); raise if the data fails."""
    from audioflow.manifest import Dataset
    from audioflow.validation import validate as _validate

    ds = Dataset.load(ingest_dir)
    report = _validate(ds, params.validate_, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    report.to_json(out / "report.json")
    report.to_html(out / "report.html")
    report.facts.to_csv(out / "facts.csv", index=False)
    _write_params(params, out, "validate")
    if report_copy is not None:
        report_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "report.json", report_copy)
        shutil.copyfile(out / "report.html", report_copy.with_suffix(".html"))
    report.raise_if_failed()
    return report


def featurize(params: Params, ingest_dir: Path, out: Path, progress: bool = True):
    from audioflow.features import featurize as _featurize
    from audioflow.manifest import Dataset

    feats = _featurize(Dataset.load(ingest_dir), params.features, out, progress=progress)
    _write_params(params, out, "features", spec=feats.spec.to_dict())
    return feats


def split(params: Params, ingest_dir: Path, out: Path):
    from audioflow import split as _split
    from audioflow.manifest import Dataset

    table = _split.split_files(Dataset.load(ingest_dir).files, params.split)
    _split.save(table, out)
    _write_params(params, out, "data", "split")
    return table


def train(params: Params, features_dir: Path, split_dir: Path, out: Path, progress: bool = True):
    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import train as _train

    result = _train(Features.load(features_dir), _split.load(split_dir), params, out,
                    progress=progress)
    _write_params(params, out, "model", "train")
    return result


def evaluate(params: Params, features_dir: Path, split_dir: Path, model_dir: Path, out: Path) -> dict:
    """Score the test split per recording; write metrics, confusion matrix and predictions."""
    from audioflow import split as _split
    from audioflow.checkpoint import load_model
    from audioflow.evaluation import write_report
    from audioflow.features import Features
    from audioflow.training import file_predictions, rows_for

    feats = Features.load(features_dir)
    table = _split.load(split_dir)
    model, meta = load_model(model_dir)
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), device=next(model.parameters()).device)
    extra = {
        "split": _split.summary(table)["counts"],
        "params_hash": meta.params_hash,
        "dataset_fingerprint": meta.dataset_fingerprint,
    }
    metrics = write_report(preds, feats.labels, out, extra=extra)
    gate = params.evaluate.min_macro_f1
    if metrics["macro_f1"] < gate:
        raise QualityGateError(
            f"test macro-F1 {metrics['macro_f1']:.4f} is below evaluate.min_macro_f1={gate}: "
            f"the model is not promoted (see {out / 'confusion_matrix.png'})"
        )
    return metrics


class QualityGateError(RuntimeError):
    pass


def heldout_windows(ingest_dir: Path, split_dir: Path, spec, limit: int = 32) -> list[np.ndarray]:
    """Windows of test recordings, for the export-time ONNX Runtime parity check."""
    from audioflow import audio
    from audioflow import split as _split
    from audioflow.manifest import Dataset

    ds = Dataset.load(ingest_dir)
    table = _split.load(split_dir)
    windows: list[np.ndarray] = []
    for rel in table.loc[table["split"] == "test", "path"]:
        signal = audio.load(ds.abspath(rel), spec.sample_rate)
        windows.extend(audio.frame_windows(signal, spec.window_samples, spec.window_hop_samples))
        if len(windows) >= limit:
            break
    return windows[:limit]


def export(params: Params, model_dir: Path, ingest_dir: Path, split_dir: Path, out_path: Path) -> dict:
    from audioflow.checkpoint import load_model
    from audioflow.export import export_onnx

    _, meta = load_model(model_dir)
    check = heldout_windows(ingest_dir, split_dir, meta.spec)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = export_onnx(model_dir, out_path, check_audio=check, opset=params.export.opset,
                         atol=params.export.atol)
    (out_path.parent / "export.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


PUBLISHED = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv")


def publish(validation_dir: Path, evaluation_dir: Path, onnx_path: Path, outputs: Path) -> None:
    """Copy the files people look at from stage folders (e.g. ZenML artifacts) to ``outputs``."""
    outputs.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        shutil.copyfile(evaluation_dir / name, outputs / name)
    shutil.copyfile(validation_dir / "report.json", outputs / "validation_report.json")
    shutil.copyfile(validation_dir / "report.html", outputs / "validation_report.html")
    shutil.copyfile(onnx_path, outputs / "model.onnx")
