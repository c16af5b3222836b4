"""Stage functions: read a stage's inputs from folders, call the library, write its outputs.

The CLI, ``dvc.yaml``, the ZenML steps and the KFP components all call these, so the ways of
running the pipeline cannot drift apart. Each stage writes its outputs atomically into its own
folder, with the parameters it used (``params.json``); ``publish_*`` copies the files people
look at into ``outputs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audioflow.config import Params
from audioflow.errors import AudioflowError

# The params.yaml sections each stage reads. Every front hands a stage exactly these (ZenML as
# step parameters, DVC as `params:`) and the stage records them in its params.json, so one run
# records the same parameters under every front (tests/test_stage_contract.py checks both).
PARAMS: dict[str, tuple[str, ...]] = {
    "ingest": ("data",),
    "validate": ("validate",),
    "featurize": ("features",),
    # Groups and folds arrive through the ingest output; data.* says which columns they were.
    "split": ("data", "split"),
    "train": ("model", "train"),
    "evaluate": ("evaluate",),
    "export": ("export",),
}


def sections_json(params: Params, stage: str) -> str:
    """The params.yaml sections ``stage`` reads, as JSON: what an orchestrator hands the stage."""
    d = params.to_dict()
    return json.dumps({k: d[k] for k in PARAMS[stage]}, sort_keys=True)


def params_from_json(sections: str) -> Params:
    """Params from ``sections_json`` (the sections not given keep their defaults)."""
    from audioflow.config import params_from_dict

    return params_from_dict(json.loads(sections), source="stage parameters")


@dataclass(frozen=True)
class Layout:
    """Where each stage writes. Intermediate artifacts vs. the files people look at."""

    artifacts: Path = Path("artifacts")
    outputs: Path = Path("outputs")

    def stage(self, name: str) -> Path:
        return self.artifacts / name

    @property
    def ingest(self) -> Path:
        return self.stage("ingest")

    @property
    def validate(self) -> Path:
        return self.stage("validate")

    @property
    def features(self) -> Path:
        return self.stage("features")

    @property
    def split(self) -> Path:
        return self.stage("split")

    @property
    def train(self) -> Path:
        return self.stage("train")

    @property
    def model_dir(self) -> Path:
        return self.train / "model"

    @property
    def evaluate(self) -> Path:
        return self.stage("evaluate")

    @property
    def export(self) -> Path:
        return self.stage("export")

    @property
    def onnx(self) -> Path:
        return self.outputs / "model.onnx"


def _write_params(params: Params, stage: str, out: Path, **resolved) -> None:
    out.mkdir(parents=True, exist_ok=True)
    d = params.to_dict()
    body = {k: d[k] for k in PARAMS[stage]} | ({"resolved": resolved} if resolved else {})
    (out / "params.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder that replaces ``out`` whole on success and goes on error.

    A crash mid-stage leaves the previous outputs (or none), never old and new files mixed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.partial-{token}")
    tmp.mkdir()  # not mkdtemp: the stage folder keeps the usual permissions (umask), not 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{token}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def ingest(params: Params, out: Path, progress: bool = True):
    from audioflow.manifest import ingest as _ingest

    ds = _ingest(params.data, progress=progress)
    with atomic_dir(out) as tmp:
        ds.save(tmp)
        _write_params(params, "ingest", tmp)
    return ds


def validate(params: Params, ingest_dir: Path, out: Path, publish_to: Path | None = None,
             progress: bool = True):
    """Validate; write report.json/.html (and publish them); raise if the data fails."""
    from audioflow.manifest import Dataset
    from audioflow.validation import validate as _validate

    ds = Dataset.load(ingest_dir)
    report = _validate(ds, params.validate_, progress=progress)
    with atomic_dir(out) as tmp:
        report.to_json(tmp / "report.json")
        report.to_html(tmp / "report.html")
        report.facts.to_csv(tmp / "facts.csv", index=False)
        _write_params(params, "validate", tmp)
    if publish_to is not None:
        publish_validation(out, publish_to)
    report.raise_if_failed()
    return report


def featurize(params: Params, ingest_dir: Path, out: Path, progress: bool = True,
              shard: tuple[int, int] = (0, 1)):
    """Log-mel windows of every recording, or of one contiguous shard of them (``merge_features``)."""
    from audioflow.features import Features
    from audioflow.features import featurize as _featurize
    from audioflow.manifest import Dataset

    with atomic_dir(out) as tmp:
        feats = _featurize(Dataset.load(ingest_dir), params.features, tmp, progress=progress, shard=shard)
        extra = {"shard": list(shard)} if shard != (0, 1) else {}
        _write_params(params, "featurize", tmp, spec=feats.spec.to_dict(), **extra)
    return Features.load(out)


def merge_features(params: Params, parts: list[Path], out: Path):
    """Featurize shards joined in order: the same folder, byte for byte, as one featurize."""
    from audioflow.features import Features
    from audioflow.features import merge_features as _merge

    with atomic_dir(out) as tmp:
        feats = _merge(parts, tmp)
        _write_params(params, "featurize", tmp, spec=feats.spec.to_dict())
    return Features.load(out)


def split(params: Params, ingest_dir: Path, out: Path):
    from audioflow import split as _split
    from audioflow.manifest import Dataset

    table = _split.split_files(Dataset.load(ingest_dir).files, params.split)
    with atomic_dir(out) as tmp:
        _split.save(table, tmp)
        _write_params(params, "split", tmp)
    return table


def train(params: Params, features_dir: Path, split_dir: Path, out: Path, progress: bool = True,
          on_checkpoint: Callable[[Path], None] | None = None):
    """Train into ``out`` (which keeps a resumable checkpoint, ``checkpoint/last.pt``, across crashes).

    ``on_checkpoint(path)`` runs after every epoch's checkpoint (see ``training.train``).
    """
    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import train as _train

    result = _train(Features.load(features_dir), _split.load(split_dir), params, out,
                    progress=progress, on_checkpoint=on_checkpoint)
    _write_params(params, "train", out)
    return result


def checkpoint_key(params: Params, features_dir: Path, split_dir: Path) -> str:
    """A short name for the training run that a checkpoint can resume (``training.run_key``)."""
    import hashlib

    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import run_key

    key = run_key(params, Features.load(features_dir), _split.load(split_dir))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class QualityGateError(AudioflowError, RuntimeError):
    pass


def evaluate(params: Params, features_dir: Path, split_dir: Path, model_dir: Path, out: Path) -> dict:
    """Score the test split per recording; write metrics, confusion matrix and predictions.

    The outputs are written before the quality gate judges them, so a run that fails the
    gate still shows what it measured.
    """
    from audioflow import split as _split
    from audioflow.checkpoint import load_model
    from audioflow.evaluation import file_predictions, rows_for, write_report
    from audioflow.features import Features

    feats = Features.load(features_dir)
    table = _split.load(split_dir)
    model, meta = load_model(model_dir)
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), device=next(model.parameters()).device)
    extra = {
        "split": _split.summary(table)["counts"],
        "params_hash": meta.params_hash,
        "dataset_fingerprint": meta.dataset_fingerprint,
    }
    with atomic_dir(out) as tmp:
        metrics = write_report(preds, feats.labels, tmp, extra=extra)
        _write_params(params, "evaluate", tmp)
    gate = params.evaluate.min_macro_f1
    if metrics["macro_f1"] < gate:
        raise QualityGateError(
            f"test macro-F1 {metrics['macro_f1']:.4f} is below evaluate.min_macro_f1={gate}: "
            f"the model is not promoted (see {out / 'confusion_matrix.png'})"
        )
    return metrics


def confusion_counts(evaluation_dir: Path) -> tuple[list[str], list[list[int]]]:
    """Labels and the confusion matrix (rows = actual) that ``evaluate`` wrote."""
    import pandas as pd

    cm = pd.read_csv(evaluation_dir / "confusion_matrix.csv", index_col=0)
    return [str(c) for c in cm.columns], cm.to_numpy().astype(int).tolist()


def png_page(path: Path, title: str) -> str:
    """A PNG embedded in a small HTML page, for dashboards that show HTML artifacts."""
    import base64
    import html

    data = base64.b64encode(path.read_bytes()).decode()
    t = html.escape(title)
    return f'<h3>{t}</h3><img alt="{t}" src="data:image/png;base64,{data}"/>'


def heldout_windows(ingest_dir: Path, split_dir: Path, spec, limit: int = 32) -> list[np.ndarray]:
    """Windows of test recordings, for the export-time ONNX Runtime parity check."""
    from audioflow import audio
    from audioflow import split as _split
    from audioflow.manifest import Dataset

    ds = Dataset.load(ingest_dir)
    table = _split.load(split_dir)
    windows: list[np.ndarray] = []
    for rel in table.loc[table["split"] == "test", "path"]:
        signal = audio.load(ds.location(rel), spec.sample_rate)
        windows.extend(audio.frame_windows(signal, spec.window_samples, spec.window_hop_samples))
        if len(windows) >= limit:
            break
    return windows[:limit]


def export(params: Params, model_dir: Path, ingest_dir: Path, split_dir: Path, out: Path) -> dict:
    """``out/model.onnx`` checked against PyTorch on test audio, ``export.json``, ``params.json``.

    Nothing lands in ``out`` unless ``onnx.checker`` and the parity check passed.
    """
    from audioflow.checkpoint import load_model
    from audioflow.export import export_onnx

    _, meta = load_model(model_dir)
    check = heldout_windows(ingest_dir, split_dir, meta.spec)
    with atomic_dir(out) as tmp:
        report = export_onnx(model_dir, tmp / "model.onnx", check_audio=check, opset=params.export.opset,
                             atol=params.export.atol)
        report["path"] = "model.onnx"  # relative to the stage folder: no temporary path recorded
        (tmp / "export.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        _write_params(params, "export", tmp)
    return report


EVALUATION_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv")


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def publish_validation(validation_dir: Path, outputs: Path) -> None:
    outputs.mkdir(parents=True, exist_ok=True)
    _copy_atomic(validation_dir / "report.json", outputs / "validation_report.json")
    _copy_atomic(validation_dir / "report.html", outputs / "validation_report.html")


def publish_evaluation(evaluation_dir: Path, outputs: Path) -> None:
    outputs.mkdir(parents=True, exist_ok=True)
    for name in EVALUATION_FILES:
        _copy_atomic(evaluation_dir / name, outputs / name)


def publish_model(export_dir: Path, outputs: Path) -> None:
    outputs.mkdir(parents=True, exist_ok=True)
    _copy_atomic(export_dir / "model.onnx", outputs / "model.onnx")


def publish(validation_dir: Path, evaluation_dir: Path, export_dir: Path, outputs: Path) -> None:
    """Copy the files people look at from stage folders (e.g. ZenML artifacts) to ``outputs``."""
    publish_validation(validation_dir, outputs)
    publish_evaluation(evaluation_dir, outputs)
    publish_model(export_dir, outputs)
