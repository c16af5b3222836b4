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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audioflow.errors import AudioflowError

if TYPE_CHECKING:  # the CLI reads the declarations in a torch-free install, too
    import numpy as np

    from audioflow.config import Params


@dataclass(frozen=True)
class Stage:
    """One stage, declared once. Every front follows this declaration:

    - the CLI makes ``audioflow <name>`` from it: the inputs' folders under ``artifacts/``,
      the stage function, the files it publishes to ``outputs/``;
    - the ZenML pipeline (``pipelines/training.py``) and the KFP pipeline
      (``pipelines/kubeflow.py``) wire their steps from ``inputs``, ``output`` and ``after``,
      and hand each step exactly ``sections``;
    - ``dvc.yaml`` lists the same sections, inputs, gate and outputs (and the code the stage
      runs); ``tests/test_stage_contract.py`` fails on any front that drifts from this.

    The stage function is ``audioflow.stages.<name>(params, *inputs, out, *, progress,
    publish_to)``: its input arguments are named after the artifacts it reads, in this order.
    """

    name: str  # the command, the dvc.yaml stage, the ZenML step, the KFP component
    help: str
    output: str  # the artifact it writes (a folder): its name in ZenML and KFP
    folder: str  # that folder under artifacts/ for the CLI and DVC
    sections: tuple[str, ...]  # the params.yaml sections it reads, whole
    inputs: tuple[str, ...] = ()  # the artifacts it reads
    after: tuple[str, ...] = ()  # artifacts that must exist first, unread: the validation gate
    publishes: tuple[tuple[str, str], ...] = ()  # (file in its folder, file in outputs/)
    # split.strategy kfold only: one instance per fold (split.folds), each cached on its own;
    # ``folder`` has a ``{fold}`` field and the function takes ``fold=``.
    per_fold: bool = False
    # Under kfold, also reads this per-fold artifact of every fold (keyword ``<artifact>s=``).
    reads_folds: str | None = None

    @property
    def fn(self) -> Callable:
        return globals()[self.name]


EVALUATION_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv",
                    "curves.png", "reliability.png", "model_card.md")
# What evaluate hands export: the temperature fitted on val and the operating point, which the
# ONNX model carries (its graph divides the logits by the temperature; the threshold is metadata).
SERVING = "serving.json"
FOLDS = "folds"  # under artifacts/: one folder per cross-validation fold

# In pipeline order. Nothing reads unvalidated data: featurize and split read the validation
# folder, which exists only when validation passed, and leave out what it quarantined.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("ingest", "find recordings and labels, hash their content",
          output="dataset", folder="ingest", sections=("data",)),
    Stage("validate", "check every recording (Great Expectations)",
          output="validation", folder="validate", sections=("validate",), inputs=("dataset",),
          publishes=(("report.json", "validation_report.json"), ("report.html", "validation_report.html"))),
    Stage("featurize", "decode, resample, window and compute log-mel features",
          output="features", folder="features", sections=("features",), inputs=("dataset", "validation")),
    # Groups and folds arrive through the ingest output; data.* says which columns they were.
    Stage("split", "stratified, group-aware train/val/test split",
          output="split", folder="split", sections=("data", "split"), inputs=("dataset", "validation")),
    # Cross-validation (split.strategy kfold): a model per fold, tested on that fold alone.
    Stage("train_fold", "kfold: train the model of one fold (trained on the other folds)",
          output="fold_model", folder=FOLDS + "/{fold}/train", sections=("model", "train"),
          inputs=("features", "split"), per_fold=True),
    Stage("evaluate_fold", "kfold: metrics of one fold's model on the recordings of that fold",
          output="fold_evaluation", folder=FOLDS + "/{fold}/evaluate", sections=("evaluate",),
          inputs=("features", "split", "fold_model"), per_fold=True),
    # The model that is exported: under kfold, trained on every recording (val for early stopping).
    Stage("train", "train the model, keep the best checkpoint (resumes after a crash)",
          output="trained_model", folder="train", sections=("model", "train"), inputs=("features", "split")),
    Stage("evaluate", "test-set metrics with bootstrap intervals (under kfold: every fold's, mean and std), "
          "confusion matrix, ROC and precision-recall curves, calibration (temperature fitted on val), the "
          "operating point, predictions, the model card",
          output="evaluation", folder="evaluate", sections=("evaluate",),
          inputs=("features", "split", "trained_model"), publishes=tuple((f, f) for f in EVALUATION_FILES),
          reads_folds="fold_evaluation"),
    # Reads the evaluation for its serving.json: the temperature and operating point go into the model.
    Stage("export", "ONNX export (waveform in, calibrated logits out) with a parity check",
          output="onnx_model", folder="export", sections=("export",),
          inputs=("trained_model", "dataset", "split", "evaluation"), publishes=(("model.onnx", "model.onnx"),)),
)}

PRODUCER: dict[str, Stage] = {s.output: s for s in STAGES.values()}  # artifact -> the stage writing it

# The params.yaml sections each stage reads. Every front hands a stage exactly these (ZenML as
# step parameters, DVC as `params:`, KFP through its configure task) and the stage records them
# in its params.json, so one run records the same parameters under every front.
PARAMS: dict[str, tuple[str, ...]] = {s.name: s.sections for s in STAGES.values()}


CODE_KEY = "audioflow_code"  # in sections_json(code=True): the digest of the stage's code, for cache keys


def sections_json(params: Params, stage: str, code: bool = False) -> str:
    """The params.yaml sections ``stage`` reads, as JSON: what an orchestrator hands the stage.

    ``code`` adds the digest of the audioflow files the stage runs (``code_deps.code_hash``), so
    an orchestrator that keys its cache on a step's inputs (KFP) reruns the stage when its code
    changes, even under the same image tag."""
    d = params.to_dict()
    out = {k: d[k] for k in PARAMS[stage]}
    if code:
        from audioflow.code_deps import code_hash

        out[CODE_KEY] = code_hash(stage)
    return json.dumps(out, sort_keys=True)


def params_from_json(sections: str) -> Params:
    """Params from ``sections_json`` (the sections not given keep their defaults)."""
    from audioflow.config import params_from_dict

    d = json.loads(sections)
    d.pop(CODE_KEY, None)
    return params_from_dict(d, source="stage parameters")


@dataclass(frozen=True)
class Layout:
    """Where the CLI and DVC keep each artifact: intermediate folders vs. the files people look at."""

    artifacts: Path = Path("artifacts")
    outputs: Path = Path("outputs")

    def path(self, artifact: str, fold: str | None = None) -> Path:
        """The folder of an artifact (``dataset``, ``features``, ...; see ``STAGES``); of a
        per-fold artifact, that fold's (without ``fold``: the folder of every fold)."""
        stage = PRODUCER[artifact]
        if not stage.per_fold:
            return self.artifacts / stage.folder
        return self.artifacts / (FOLDS if fold is None else stage.folder.format(fold=fold))

    @property
    def onnx(self) -> Path:
        return self.outputs / "model.onnx"


def run_stage(name: str, params: Params, layout: Layout, progress: bool = True, publish: bool = True,
              fold: str | None = None):
    """Run one stage on the layout's folders (the CLI and DVC): what ``audioflow <name>`` does."""
    stage = STAGES[name]
    if stage.per_fold != (fold is not None):
        raise AudioflowError(f"{name}: " + ("--fold names one of split.folds" if stage.per_fold
                                            else "has no folds"))
    kwargs = {"fold": str(fold)} if stage.per_fold else {}
    if stage.reads_folds:  # the folds the split made (split.folds when it ran)
        from audioflow.split import fold_names

        kwargs[f"{stage.reads_folds}s"] = [layout.path(stage.reads_folds, f) for f in fold_names(layout.path("split"))]
    result = stage.fn(params, *(layout.path(a, fold) for a in stage.inputs), layout.path(stage.output, fold),
                      progress=progress, publish_to=layout.outputs if publish else None, **kwargs)
    if name == "split":
        write_fold_plan(layout.path("split"), layout.artifacts / FOLDS / FOLD_PLAN)
    return result


FOLD_PLAN = "folds.json"


def write_fold_plan(split: Path, path: Path) -> None:
    """``artifacts/folds/folds.json``: the folds (none unless kfold) and what each tests.

    The folds' folder exists from the split on, with or without folds, so DVC's evaluate stage
    can depend on it (dvc.yaml: a dependency must exist, and the folds' stages may be none).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    info = json.loads((split / "split.json").read_text()).get("folds", {})
    _write_atomic(path, json.dumps({"folds": list(info), "counts": info}, indent=2) + "\n")


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


def ingest(params: Params, out: Path, *, progress: bool = True, publish_to: Path | None = None):
    from audioflow.manifest import ingest as _ingest

    ds = _ingest(params.data, progress=progress)
    with atomic_dir(out) as tmp:
        ds.save(tmp)
        _write_params(params, "ingest", tmp)
    return ds


def validate(params: Params, dataset: Path, out: Path, *, progress: bool = True, publish_to: Path | None = None):
    """Validate; write report.json/.html (and publish them, failed or not); raise if the data fails."""
    from audioflow.manifest import Dataset
    from audioflow.validation import validate as _validate

    report = _validate(Dataset.load(dataset), params.validate_, progress=progress)
    with atomic_dir(out) as tmp:
        report.to_json(tmp / "report.json")
        report.to_html(tmp / "report.html")
        report.facts.to_csv(tmp / "facts.csv", index=False)
        report.quarantine_table().to_csv(tmp / "quarantine.csv", index=False)
        for name, kept in report.gx.items():  # the Great Expectations suites and GX's own results
            for part in ("suite", "result"):
                (tmp / f"gx_{name}_{part}.json").write_text(json.dumps(kept[part], indent=2) + "\n")
        _write_params(params, "validate", tmp)
    publish("validate", out, publish_to)
    report.raise_if_failed()
    return report


def validated(dataset: Path, validation: Path):
    """The ingested dataset without what validation left out (its ``quarantine.csv``)."""
    from dataclasses import replace

    import pandas as pd

    from audioflow.errors import NotValidatedError
    from audioflow.manifest import Dataset

    quarantine = validation / "quarantine.csv"
    if not quarantine.is_file():
        raise NotValidatedError(f"{validation}: no validation result (quarantine.csv) here: run "
                                "`audioflow validate` first; nothing reads unvalidated data")
    ds = Dataset.load(dataset)
    left_out = set(pd.read_csv(quarantine, dtype=str, keep_default_na=False)["path"])
    return replace(ds, files=ds.files[~ds.files["path"].isin(left_out)].reset_index(drop=True))


def featurize(params: Params, dataset: Path, validation: Path, out: Path, *, progress: bool = True,
              publish_to: Path | None = None, shard: tuple[int, int] = (0, 1)):
    """Log-mel windows of every usable recording, or of one contiguous shard of them (``merge_features``)."""
    from audioflow.features import Features
    from audioflow.features import featurize as _featurize

    with atomic_dir(out) as tmp:
        feats = _featurize(validated(dataset, validation), params.features, tmp, progress=progress, shard=shard)
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


def split(params: Params, dataset: Path, validation: Path, out: Path, *, progress: bool = True,
          publish_to: Path | None = None):
    from audioflow import split as _split

    table = _split.split_files(validated(dataset, validation).files, params.split)
    folds = _split.fold_tables(table, params.split) if params.split.strategy == "kfold" else None
    with atomic_dir(out) as tmp:
        _split.save(table, tmp, folds)
        _write_params(params, "split", tmp)
    return table


def train(params: Params, features: Path, split: Path, out: Path, *, progress: bool = True,
          publish_to: Path | None = None, on_checkpoint: Callable[[Path], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None):
    """Train into ``out`` (which keeps a resumable checkpoint, ``checkpoint/last.pt``, across crashes).

    The best weights go to ``out/model``. ``on_checkpoint(path)`` runs after every epoch's
    checkpoint, ``on_epoch(row)`` after every epoch (see ``training.train``). Every epoch's
    figures also go to ``out/live`` with DVCLive while training runs (``metrics.json``, and a
    TSV per metric under ``plots/``), where `dvc exp show` and `dvc plots` read them.
    """
    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import train as _train

    with live_log(out / LIVE) as log:
        def each_epoch(row: dict) -> None:
            log(row)
            if on_epoch is not None:
                on_epoch(row)

        result = _train(Features.load(features), _split.load(split), params, out,
                        progress=progress, on_checkpoint=on_checkpoint, on_epoch=each_epoch)
    _write_params(params, "train", out)
    return result


LIVE = "live"  # the DVCLive folder in a train stage folder


@contextmanager
def live_log(folder: Path) -> Iterator[Callable[[dict], None]]:
    """A function that logs one epoch's figures with DVCLive into ``folder`` (started afresh;
    a resumed run replays its earlier epochs). Without DVCLive (no dvc extra) it does nothing."""
    try:
        from dvclive import Live
    except ImportError:
        yield lambda row: None
        return

    class FilesOnly(Live):
        # Only the files: dvc.yaml declares them, and DVCLive makes no experiment of its own.
        # (Its repository probe also fails in a git repository without a commit, DVCLive 3.49.)
        def _init_dvc(self) -> None:
            pass

    live = FilesOnly(dir=str(folder), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(row: dict) -> None:
        live.step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                live.log_metric(key, value)
        live.make_summary()

    try:
        yield log
    finally:
        live.end()


def checkpoint_key(params: Params, features: Path, split: Path) -> str:
    """A short name for the training run that a checkpoint can resume (``training.run_key``)."""
    import hashlib

    from audioflow import split as _split
    from audioflow.features import Features
    from audioflow.training import run_key

    key = run_key(params, Features.load(features), _split.load(split))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def checkpoint_store(root: str, run: str, params: Params, features: Path, split: Path, local: Path):
    """The training checkpoint ``local/last.pt`` mirrored in ``<root>/<run>/<checkpoint_key>``
    (object storage, a folder: anything fsspec opens), where a retry of the same run finds it;
    with an empty ``root``, nothing is mirrored (yields None). See ``storage.mirrored_checkpoint``."""
    from contextlib import nullcontext

    from audioflow.storage import FsspecFolder, mirrored_checkpoint

    if not root:
        return nullcontext(None)
    key = checkpoint_key(params, features, split)
    return mirrored_checkpoint(FsspecFolder(f"{root.rstrip('/')}/{run}/{key}"), local)


class QualityGateError(AudioflowError, RuntimeError):
    pass


def train_fold(params: Params, features: Path, split: Path, out: Path, *, fold: str, progress: bool = True,
               publish_to: Path | None = None, on_checkpoint: Callable[[Path], None] | None = None,
               on_epoch: Callable[[dict], None] | None = None):
    """``train`` on one fold's split (``split/folds/<fold>``): that fold is its test set."""
    from audioflow import split as _split

    return train(params, features, _split.fold_dir(split, fold), out, progress=progress,
                 on_checkpoint=on_checkpoint, on_epoch=on_epoch)


def _window_logits(model, feats, table, part: str):
    """(sorted window rows, their logits) of the recordings of one split part."""
    import numpy as np

    from audioflow.evaluation import predict_rows, rows_for

    rows = np.sort(rows_for(feats, table, part))
    return rows, predict_rows(model, feats.array, rows, device=next(model.parameters()).device)


def selected_model(trained_model: Path):
    """The model chosen on val (``checkpoint.SELECTED``): trained on the train split alone, so its
    val predictions are held out even when the exported model was refit on train + val."""
    from audioflow.checkpoint import SELECTED, load_model

    return load_model(trained_model / "model" / SELECTED)[0]


def _serving(params: Params, feats, table, model) -> dict:
    """What the exported model carries from validation: the temperature (``evaluate.calibrate``)
    and the operating point (``evaluate.positive_labels``), both set on the val recordings by
    ``model``, the one chosen there (``selected_model``; with ``train.refit`` the exported
    model, trained again on train + val for as many epochs, takes them over)."""
    from audioflow import reliability
    from audioflow.evaluation import aggregate_files

    ev = params.evaluate
    rows, logits = _window_logits(model, feats, table, "val")
    if not len(rows):
        raise AudioflowError("evaluate: the split has no validation recordings to calibrate on")
    val = aggregate_files(feats, rows, logits)
    temperature = 1.0
    if ev.calibrate:
        windows = reliability.window_recordings(feats.index.set_index("row").loc[rows, "path"])
        temperature = reliability.fit_temperature(logits, windows, reliability.actual_index(val, feats.labels))
        val = aggregate_files(feats, rows, logits / temperature)
    return {"temperature": temperature, "calibrated_on": {"split": "val", "recordings": len(val)},
            "operating_point": reliability.fit_operating_point(feats.labels, ev.positive_labels, val,
                                                               ev.target_recall)}


def _groups(table, paths) -> list[str]:
    """The group (patient, speaker) of each recording; empty strings without groups."""
    group = dict(zip(table["path"], table["group"]))
    return [group[p] for p in paths]


def _test_split_hash(paths) -> str:
    """Names the test recordings: two evaluations with the same hash scored the same ones."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:16]


def _score(params: Params, features: Path, split: Path, trained_model: Path, tmp: Path, title: str,
           extra: dict) -> dict:
    """Score the test part of ``split`` per recording as the exported model will (temperature
    fitted on val); write the report, the curves and calibration figures, the uncalibrated
    predictions and ``serving.json`` into ``tmp``."""
    from audioflow import reliability
    from audioflow import split as _split
    from audioflow.checkpoint import load_model
    from audioflow.evaluation import aggregate_files, write_report
    from audioflow.features import Features

    feats = Features.load(features)
    table = _split.load(split)
    model, meta = load_model(trained_model / "model")
    serving = _serving(params, feats, table, selected_model(trained_model))
    rows, logits = _window_logits(model, feats, table, "test")
    t = serving["temperature"]
    preds, raw = aggregate_files(feats, rows, logits / t), aggregate_files(feats, rows, logits)
    ev = params.evaluate
    assessed = reliability.assess(feats.labels, preds, raw, _groups(table, preds["path"]), t,
                                  serving["operating_point"], tmp, n_resamples=ev.bootstrap, confidence=ev.confidence,
                                  n_bins=ev.calibration_bins, seed=ev.seed, title=title)
    extra = {"split": _split.summary(table)["counts"], "params_hash": meta.params_hash,
             "dataset_fingerprint": meta.dataset_fingerprint, "test_split_hash": _test_split_hash(preds["path"])} \
        | extra | assessed
    raw.to_csv(tmp / "predictions_uncalibrated.csv", index=False)
    _write_atomic(tmp / SERVING, json.dumps(serving, indent=2) + "\n")
    return write_report(preds, feats.labels, tmp, extra=extra, title=title)


def evaluate_fold(params: Params, features: Path, split: Path, fold_model: Path, out: Path, *, fold: str,
                  progress: bool = True, publish_to: Path | None = None) -> dict:
    """One fold's model on the recordings of that fold (no gate: ``evaluate`` judges the mean)."""
    from audioflow import split as _split

    with atomic_dir(out) as tmp:
        metrics = _score(params, features, _split.fold_dir(split, fold), fold_model, tmp, f"Fold {fold}",
                         {"fold": fold})
        _write_params(params, "evaluate_fold", tmp)
    return metrics


def _cross_validation(params: Params, features: Path, split: Path, trained_model: Path, folds: dict[str, Path],
                      tmp: Path) -> dict:
    """The folds' report (``evaluation.cross_validation_report``), plus intervals, curves and
    calibration of every recording's out-of-fold prediction (each fold's model with its own
    temperature and threshold), and ``serving.json`` of the final model (its val split)."""
    import pandas as pd

    from audioflow import reliability
    from audioflow import split as _split
    from audioflow.evaluation import cross_validation_report
    from audioflow.features import Features

    table = _split.load(split)
    metrics = cross_validation_report(folds, tmp, extra={"split": _split.summary(table)["counts"]})
    feats = Features.load(features)
    serving = _serving(params, feats, table, selected_model(trained_model))
    read = {"dtype": {"path": str, "actual": str, "predicted": str}, "keep_default_na": False}
    pooled = pd.read_csv(tmp / "predictions.csv", **read)
    raw = pd.concat([pd.read_csv(f / "predictions_uncalibrated.csv", **read) for f in folds.values()],
                    ignore_index=True)
    by_fold = {name: json.loads((f / SERVING).read_text()) for name, f in folds.items()}
    op = serving["operating_point"]
    thresholds = None
    if op is not None:  # each recording judged at the threshold of the model that held it out
        thresholds = pooled["fold"].astype(str).map({n: s["operating_point"]["threshold"]
                                                     for n, s in by_fold.items()}).to_numpy(dtype=float)
    ev = params.evaluate
    assessed = reliability.assess(feats.labels, pooled.drop(columns="fold"), raw, _groups(table, pooled["path"]),
                                  serving["temperature"], op, tmp, n_resamples=ev.bootstrap,
                                  confidence=ev.confidence, n_bins=ev.calibration_bins, seed=ev.seed,
                                  title=f"Out of fold ({len(folds)} folds)", thresholds=thresholds)
    assessed["calibration"]["fold_temperatures"] = {n: s["temperature"] for n, s in by_fold.items()}
    if op is not None:
        assessed["operating_point"]["fold_thresholds"] = {n: s["operating_point"]["threshold"]
                                                          for n, s in by_fold.items()}
    metrics |= assessed | {"test_split_hash": _test_split_hash(pooled["path"])}
    _write_atomic(tmp / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _write_atomic(tmp / SERVING, json.dumps(serving, indent=2) + "\n")
    return metrics


def evaluate(params: Params, features: Path, split: Path, trained_model: Path, out: Path, *,
             progress: bool = True, publish_to: Path | None = None,
             fold_evaluations: Sequence[Path] = ()) -> dict:
    """Score the test split per recording; write metrics with bootstrap intervals, confusion
    matrix, curves, calibration, the operating point, predictions and the model card.

    The model is scored as it will be served: the temperature fitted on val divides its logits
    (``serving.json`` hands it, and the operating point, to export). Under kfold
    (``fold_evaluations``: every fold's ``evaluate_fold`` folder, in ``split.folds`` order) the
    figures are the folds': mean and standard deviation of every metric, each fold's, and the
    confusion matrix, predictions, intervals and curves of every recording from the fold that
    held it out. The outputs are written before the quality gate judges them, so a run that
    fails the gate still shows what it measured (in ``out``; only a model that passes is
    published).
    """
    from audioflow import split as _split
    from audioflow.model_card import write_model_card

    folds = _split.fold_names(split)
    # Each fold's evaluation names its fold (metrics.json), whatever folder it is in.
    given = {json.loads((Path(f) / "metrics.json").read_text())["fold"]: Path(f) for f in fold_evaluations}
    if sorted(given) != sorted(folds):
        raise AudioflowError(f"evaluate: the split has folds {folds} but evaluations of folds {sorted(given)} "
                             "were given: run evaluate_fold for each of split.folds first")
    with atomic_dir(out) as tmp:
        if folds:
            metrics = _cross_validation(params, features, split, trained_model, {f: given[f] for f in folds}, tmp)
        else:
            metrics = _score(params, features, split, trained_model, tmp, "Test set", {})
        _write_params(params, "evaluate", tmp)
        write_model_card(tmp / "model_card.md", tmp, split, trained_model)
    gate = params.evaluate.min_macro_f1
    if metrics["macro_f1"] < gate:
        what = f"mean macro-F1 over {len(folds)} folds" if folds else "test macro-F1"
        raise QualityGateError(
            f"{what} {metrics['macro_f1']:.4f} is below evaluate.min_macro_f1={gate}: "
            f"the model is not promoted (see {out / 'confusion_matrix.png'})"
        )
    publish("evaluate", out, publish_to)
    return metrics


def confusion_counts(evaluation: Path) -> tuple[list[str], list[list[int]]]:
    """Labels and the confusion matrix (rows = actual) that ``evaluate`` wrote."""
    import pandas as pd

    cm = pd.read_csv(evaluation / "confusion_matrix.csv", index_col=0)
    return [str(c) for c in cm.columns], cm.to_numpy().astype(int).tolist()


def headline_metrics(metrics: dict) -> dict[str, float | int | str]:
    """The figures a dashboard shows, flat: scores and their interval bounds, per-class F1, macro
    AUC/AP, calibration, the operating point, what identifies the test split (ZenML metadata,
    KFP Metrics)."""
    flat: dict = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}
    if "std" in metrics:  # kfold: the spread over folds, and each fold
        flat |= {f"{k}_std": metrics["std"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        flat |= {f"macro_f1_fold_{f}": m["macro_f1"] for f, m in metrics["folds"].items()}
    flat |= {f"f1_{label}": v["f1"] for label, v in metrics["per_class"].items()}
    intervals = metrics.get("intervals") or {}
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        for end in ("low", "high"):
            if (intervals.get(key) or {}).get(end) is not None:
                flat[f"{key}_{end}"] = intervals[key][end]
    for key in ("auc", "average_precision"):
        if (metrics.get(key) or {}).get("macro") is not None:
            flat[f"macro_{key}"] = metrics[key]["macro"]
    if cal := metrics.get("calibration"):
        flat |= {"temperature": cal["temperature"], "ece": cal["ece"], "ece_uncalibrated": cal["ece_uncalibrated"]}
    if op := metrics.get("operating_point"):
        flat["operating_threshold"] = op["threshold"]
        flat |= {f"operating_{k}": op["test"][k] for k in ("recall", "specificity") if op["test"][k] is not None}
    return flat | {k: metrics[k] for k in ("test_split_hash", "dataset_fingerprint") if k in metrics}


def summary_roc(evaluation: Path) -> tuple[list[float], list[float], list[float], str]:
    """One ROC curve for dashboards that hold one (KFP's ClassificationMetrics): the operating
    point's positive classes against the rest where one is set, else the micro-average of every
    class against the rest. (fpr, tpr, threshold, what it is)."""
    import numpy as np
    import pandas as pd

    from audioflow import reliability

    metrics = json.loads((evaluation / "metrics.json").read_text())
    labels = list(metrics["per_class"])
    preds = pd.read_csv(evaluation / "predictions.csv", dtype={"path": str, "actual": str, "predicted": str},
                        keep_default_na=False)
    probs = reliability.probabilities(preds, labels)
    if op := metrics.get("operating_point"):
        positive = [labels.index(lab) for lab in op["positive_labels"]]
        y, score = preds["actual"].isin(op["positive_labels"]).to_numpy(), reliability.positive_score(probs, positive)
        what = f"{' + '.join(op['positive_labels'])} against the rest"
    else:
        y = (reliability.actual_index(preds, labels)[:, None] == np.arange(len(labels))[None, :]).ravel()
        score, what = probs.ravel(), "micro-average of every class against the rest"
    roc = reliability.pooled_roc(y, score) or {"fpr": [], "tpr": [], "threshold": []}
    return roc["fpr"], roc["tpr"], roc["threshold"], what


def png_page(path: Path, title: str) -> str:
    """A PNG embedded in a small HTML page, for dashboards that show HTML artifacts."""
    import base64
    import html

    data = base64.b64encode(path.read_bytes()).decode()
    t = html.escape(title)
    return f'<h3>{t}</h3><img alt="{t}" src="data:image/png;base64,{data}"/>'


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
        _write_params(params, "export", tmp)
    publish("export", out, publish_to)
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


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_atomic(dst: Path, text: str) -> None:
    tmp = dst.with_name(f".{dst.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, dst)


def publish(stage: str, folder: Path, outputs: Path | None) -> None:
    """Copy the files people look at (``Stage.publishes``) from a stage's folder to ``outputs``."""
    if outputs is None:
        return
    outputs.mkdir(parents=True, exist_ok=True)
    for src, dst in STAGES[stage].publishes:
        _copy_atomic(folder / src, outputs / dst)


def publish_all(folders: dict[str, Path], outputs: Path) -> None:
    """``publish`` for every stage that publishes, from its artifact folders (``{output: folder}``)."""
    for stage in STAGES.values():
        if stage.publishes:
            publish(stage.name, folders[stage.output], outputs)
