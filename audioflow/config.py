"""params.yaml, loaded once into validated, frozen config objects.

An unknown key or a bad value fails with a message that names it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audioflow.errors import AudioflowError

# What pydantic adds to an error's location for each member of a union (``int | "auto"``).
_UNION_MEMBER = re.compile(r"(constrained-)?(int|float|str|bool)|literal\[.*\]")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    root: str = "data"  # folder with the recordings, relative to the working directory
    manifest: str | None = "manifest.csv"  # CSV under root; null = discover root/<label>/*.wav
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None  # recordings that share a group never straddle splits
    fold_column: str | None = None  # train/val/test per file (split.strategy=predefined) or the
    # cross-validation fold of each file (split.strategy=kfold: ESC-50's 1-5, UrbanSound8K's 1-10)


# Every check validation runs, and how serious a failure is unless validate.severity says
# otherwise: an error makes a recording unusable or the labels untrustworthy (the run stops,
# or under on_error: quarantine the file is left out); a warning is a quality concern that
# real collections commonly have (shown in the report and the summary; the run goes on).
CHECK_SEVERITY: dict[str, str] = {
    # the manifest
    "manifest_entry": "error",  # empty path or label, path leaving the data root
    "listed_twice": "error",  # one path on two manifest lines
    "missing": "error",  # listed, not there
    "unlisted": "warning",  # an audio file under the root that the manifest does not name
    "label_allowed": "error",  # label outside validate.labels
    "similar_labels": "error",  # 'Normal' and 'normal': one class under two names
    # each recording
    "readable": "error",  # empty, corrupt, not audio, NaN/Inf samples
    "truncated": "error",  # the WAV header promises more frames than the file holds
    "silence": "error",  # RMS below validate.silence_dbfs
    "low_level": "warning",  # RMS below validate.low_level_dbfs
    "clipping": "warning",  # more than validate.max_clipped_fraction of samples at full scale
    "duration": "warning",  # outside validate.min_duration_s .. max_duration_s
    "sample_rate": "warning",  # not in validate.sample_rates (resampled anyway)
    "multichannel": "info",  # more than one channel: mixed down to mono, as designed (noted, not a problem)
    "channels": "error",  # more than validate.max_channels
    # across recordings
    "conflict": "error",  # identical content under two labels
    "duplicate": "warning",  # identical content twice under one label: the split keeps the copies together
    "group_labels": "warning",  # one group (patient, speaker) under several labels
    "min_per_class": "error",  # a class too small for train/val/test once errors are left out
    "n_classes": "error",  # fewer than two classes
}
Severity = Literal["error", "warning", "info", "off"]


class ValidateConfig(_Section):
    min_duration_s: float = Field(0.05, gt=0)  # shorter recordings hold no usable window
    max_duration_s: float = Field(3600.0, gt=0)  # longer ones are usually a wrong file
    sample_rates: list[int] = []  # allowed native rates in Hz; empty = any (we resample)
    max_channels: int = Field(8, ge=1)
    silence_dbfs: float = -60.0  # RMS below this (dB re full scale) counts as silent
    low_level_dbfs: float = -45.0  # RMS below this (and above silence) is a low level
    max_clipped_fraction: float = Field(0.01, ge=0, le=1)  # samples at |x| >= 0.999
    min_per_class: int = Field(5, ge=1)  # fewer recordings cannot be split and evaluated
    labels: list[str] = []  # allowed labels; empty = whatever the manifest names
    severity: dict[str, Severity] = {}  # check -> error | warning | info | off, over CHECK_SEVERITY
    on_error: Literal["fail", "quarantine"] = "fail"  # quarantine: leave files with errors out

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("validate.min_duration_s must be below validate.max_duration_s")
        if self.low_level_dbfs < self.silence_dbfs:
            raise ValueError("validate.low_level_dbfs must not be below validate.silence_dbfs")
        unknown = sorted(set(self.severity) - set(CHECK_SEVERITY))
        if unknown:
            raise ValueError(f"validate.severity: unknown check(s) {unknown}; the checks are {sorted(CHECK_SEVERITY)}")
        return self

    def severity_of(self, check: str) -> str:
        return self.severity.get(check, CHECK_SEVERITY[check])


class FeaturesConfig(_Section):
    sample_rate: int | Literal["auto"] = "auto"  # Hz; auto = the most common native rate
    # Clip length the model sees (short files are padded, long ones cut into windows); auto =
    # the shortest of AUTO_WINDOWS_S that holds 90 % of the recordings whole (features.py).
    window_s: float | Literal["auto"] = "auto"
    window_hop_s: float | None = None  # hop between windows of long files; null = window_s / 2
    win_ms: float = Field(25.0, gt=0)  # STFT window length
    hop_ms: float = Field(10.0, gt=0)  # STFT hop: 100 frames per second
    n_mels: int = Field(64, ge=8)
    n_fft: int | None = None  # null = next power of two >= max(window, 8 * n_mels)
    f_min: float = Field(0.0, ge=0)  # Hz
    f_max: float | None = None  # Hz; null = Nyquist
    # peak: dB re each window's loudest cell (a recording's gain does not move its features);
    # absolute: dB re full scale (the level itself is a feature). features.py, power_to_db.
    level: Literal["peak", "absolute"] = "peak"
    top_db: float = Field(50.0, gt=0, le=200)  # level peak: dB kept below the peak; the floor
    batch_size: int = Field(64, ge=1)  # windows per featurize batch at most (on a CPU also logmel.CPU_BATCH_SAMPLES)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    shards: int = Field(1, ge=1, le=256)  # parallel featurize tasks on Kubeflow (merged: same bytes)

    @model_validator(mode="after")
    def _check(self) -> FeaturesConfig:
        if self.window_s != "auto" and self.window_s <= 0:
            raise ValueError("features.window_s must be positive, or auto")
        if self.window_hop_s is not None and self.window_hop_s <= 0:
            raise ValueError("features.window_hop_s must be positive")
        if self.f_max is not None and self.f_max <= self.f_min:
            raise ValueError("features.f_max must be above features.f_min")
        if self.win_ms < self.hop_ms:
            raise ValueError("features.win_ms must be at least features.hop_ms")
        return self


class SplitConfig(_Section):
    strategy: Literal["stratified", "predefined", "kfold"] = "stratified"
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 42
    # kfold: the folds' names, one model each (tested on its fold, trained on the others); with
    # data.fold_column, the values of that column (ESC-50: [1, 2, 3, 4, 5]). A list, not a count,
    # because dvc.yaml makes one train/evaluate stage per entry (`foreach`).
    folds: list[int | str] = []

    @model_validator(mode="after")
    def _folds(self) -> SplitConfig:
        names = [str(f) for f in self.folds]
        if self.strategy == "kfold" and len(names) < 2:
            raise ValueError("split.strategy kfold needs split.folds, two names or more, e.g. [1, 2, 3, 4, 5]")
        if self.strategy != "kfold" and names:
            raise ValueError(f"split.folds is set but split.strategy is {self.strategy}: "
                             "set split.strategy: kfold, or split.folds: []")
        if len(set(names)) != len(names):
            raise ValueError(f"split.folds names a fold twice: {names}")
        bad = [n for n in names if not n or "/" in n or n.startswith(".") or n != n.strip()]
        if bad:
            raise ValueError(f"split.folds: {bad} cannot name a folder")
        return self

    @property
    def fold_names(self) -> list[str]:
        return [str(f) for f in self.folds]


# Each model declares its options here (torch-free, so params.yaml validates without torch) and
# registers them with its factory (audioflow.models.register_model); params.yaml has one
# subsection per model under `model:`, and `model.name` picks the one that is trained.
class CNNOptions(_Section):
    """LogMelCNN: a stride-2 stem, conv blocks that halve frequency and time, mean+max over time."""

    channels: list[int] = Field([16, 32, 64, 128], min_length=1)  # stem width, then one block per entry
    dropout: float = Field(0.2, ge=0, lt=1)


class BCResNetOptions(_Section):
    """BC-ResNet (broadcasted residual learning; Kim et al., Interspeech 2021): frequency-
    depthwise 2-D convolutions plus time-only 1-D convolutions broadcast back over frequency;
    small, and built for keyword spotting on unseen speakers."""

    width: float = Field(2.0, gt=0, le=16)  # BC-ResNet-w: stages of 8w, 12w, 16w, 20w channels
    dropout: float = Field(0.1, ge=0, lt=1)
    subbands: int = Field(4, ge=1)  # sub-spectral normalization: frequency groups normalized apart


class ModelConfig(_Section):
    """``name`` and one options section per model (``model.<name>``): a new model is its module in
    audioflow/models/, its options class here, its field below and its section in params.yaml."""

    name: str = "cnn"  # one of the sections below
    cnn: CNNOptions = CNNOptions()
    bcresnet: BCResNetOptions = BCResNetOptions()

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        if self.name not in MODEL_OPTIONS:
            raise ValueError(f"model.name {self.name!r} is not one of {sorted(MODEL_OPTIONS)}")
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The options of the model that is trained (``model.<name>``)."""
        return getattr(self, self.name).model_dump()


# model name -> its options class, from ModelConfig's fields
MODEL_OPTIONS: dict[str, type[_Section]] = {n: f.annotation for n, f in ModelConfig.model_fields.items()
                                            if n != "name"}


AUTO_EPOCHS, AUTO_EPOCHS_MAX = 30, 60  # train.epochs auto: passes, and how far min_steps may lengthen them


class TrainConfig(_Section):
    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"  # auto: ``schedule``
    min_steps: int = Field(500, ge=0)  # epochs auto: optimizer steps the schedule makes at least
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)  # peak learning rate after warm-up
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float = Field(5.0, gt=0)  # max global L2 norm of the gradients
    patience: int = Field(15, ge=1)  # epochs without a better val metric before stopping
    select_lr: float = Field(0.5, gt=0, le=1)  # the epoch is chosen among those ending at lr <= this x lr
    # Then train afresh on train + val for the chosen epochs (exported); T, threshold: the chosen model's.
    refit: bool = True
    monitor: Literal["loss", "macro_f1", "accuracy", "balanced_accuracy"] = "loss"  # on val
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision, CUDA only (bf16 where supported, else fp16 with a GradScaler)
    compile: bool = False  # torch.compile the training forward/backward (first epoch pays the compile)
    # On CUDA, capture the training step (augmentation, front-end, forward, backward) once as a
    # CUDA graph and replay it per batch: a small model's step is mostly kernel launches.
    # Not with mixup, fp16 loss scaling or compile, or when the batches' source is not in GPU
    # memory; those train eagerly. No effect on a CPU.
    cuda_graph: bool = True
    freq_mask: int = Field(8, ge=0)  # SpecAugment: widest masked band in mel bins; 0 = off
    time_mask: int = Field(20, ge=0)  # SpecAugment: longest masked span in frames; 0 = off
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    # Augmentation of training batches, vectorized on the log-mel batch: a random gain per
    # example (a dB offset, exact on log-mel; silence stays silence), and mixup (pairs of
    # examples and their labels mixed, weight ~ Beta(mixup, mixup)).
    gain_db: float = Field(10.0, ge=0, le=40)  # uniform in +-gain_db; 0 = off
    mixup: float = Field(0.0, ge=0)  # Beta alpha; 0 = off
    # Augmentation on the waveform: each training window is cut afresh from the decoded
    # recording (features/audio.npy) and run through the front-end per batch (on the GPU when
    # training runs there). shift: the window moves by up to this fraction of its length (within
    # a long recording; a short one is delayed inside the window); speed: resampled by a factor
    # in 1 +- speed (tempo and pitch, as Kaldi's speed perturbation); noise: with probability
    # noise_prob, Gaussian noise of a random colour (white to brown) over the recording's
    # extent, at an SNR uniform in noise_snr_db. All 0 = the stored features, no waveform work.
    shift: float = Field(0.25, ge=0, le=1)
    speed: float = Field(0.1, ge=0, lt=0.5)
    noise_prob: float = Field(0.5, ge=0, le=1)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    # Imbalance. balanced: each class weighs n / (k * n_class) in the loss (no change when the
    # classes are even); focal: (1 - p)^gamma down-weights examples already right; a balanced
    # sampler draws every class equally often (with replacement) instead of shuffling.
    class_weight: Literal["none", "balanced"] = "balanced"
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0)
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    # Fine-tuning: start from an earlier audioflow model (its model/ folder, or the train stage
    # folder holding it) of the same architecture; a new label set gets a new classifier.
    init_from: str | None = None
    freeze_epochs: int = Field(0, ge=0)  # backbone frozen (weights and batch-norm statistics) this long
    backbone_lr_scale: float = Field(1.0, ge=0)  # backbone learning rate = lr * this; the classifier's = lr

    @model_validator(mode="after")
    def _snr(self) -> TrainConfig:
        lo, hi = self.noise_snr_db
        if lo > hi:
            raise ValueError(f"train.noise_snr_db [{lo}, {hi}]: the first (lowest SNR) must not exceed the second")
        return self

    def schedule(self, n_windows: int) -> tuple[int, int]:
        """(epochs, patience) for ``n_windows`` training windows: ``epochs``, or for auto AUTO_EPOCHS
        lengthened (up to AUTO_EPOCHS_MAX) to min_steps optimizer steps, patience scaled with it."""
        if self.epochs != "auto":
            return self.epochs, self.patience
        steps = max(1, math.ceil(n_windows / self.batch_size))  # a pass's
        epochs = min(AUTO_EPOCHS_MAX, max(AUTO_EPOCHS, math.ceil(self.min_steps / steps)))
        return epochs, max(1, round(self.patience * epochs / AUTO_EPOCHS))

    @property
    def waveform_augmentation(self) -> bool:
        """Whether training batches are cut from the decoded audio (any waveform augmentation on)."""
        return bool(self.shift or self.speed or self.noise_prob)


class EvaluateConfig(_Section):
    min_macro_f1: float = Field(0.0, ge=0, le=1)  # quality gate on the test split
    # Uncertainty: percentile bootstrap over test recordings, or whole groups when the split has
    # groups (data.group_column), for accuracy, balanced accuracy and macro-F1.
    bootstrap: int = Field(1000, ge=100, le=100_000)  # resamples
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of every interval
    seed: int = 0  # of the resampling: the same predictions give the same intervals
    # Temperature scaling (logits / T) fitted on val, put into the ONNX graph: served
    # probabilities are calibrated. false: T = 1.
    calibrate: bool = True
    calibration_bins: int = Field(15, ge=2, le=100)  # equal-width confidence bins of the ECE
    # Operating point: these classes against the rest (screening), flagged when their summed
    # probability reaches the threshold that gives target_recall on val; [] = none.
    positive_labels: list[str] = []
    target_recall: float = Field(1.0, gt=0, le=1)
    # Promotion (ZenML model registry): compare, with the production version on this test split
    # (promoted unless the paired bootstrap says it is worse); always; never.
    promotion: Literal["compare", "always", "never"] = "compare"
    promotion_metric: Literal["macro_f1", "balanced_accuracy", "accuracy"] = "macro_f1"
    intended_use: str = ""  # a sentence for the model card; empty: a generic one

    @model_validator(mode="after")
    def _labels(self) -> EvaluateConfig:
        twice = sorted({lab for lab in self.positive_labels if self.positive_labels.count(lab) > 1})
        if twice:
            raise ValueError(f"evaluate.positive_labels names {twice} twice")
        return self


class ExportConfig(_Section):
    opset: int = Field(18, ge=18)  # torch 2.11 dynamo export builds opset-18 graphs
    atol: float = Field(1e-4, gt=0)  # ONNX Runtime vs PyTorch, on held-out audio
    # Also write model.int8.onnx (INT8 classifier, float front-end, calibrated on the val split)
    # and report the test-split macro-F1 of both models; `audioflow export --int8` sets it.
    int8: bool = False
    int8_max_drop: float = Field(0.01, ge=0)  # macro-F1 FP32 - INT8 beyond this is reported as a miss


class Params(_Section):
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    features: FeaturesConfig = FeaturesConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (all of them when none are named)."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in (sections or tuple(d))}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class ParamsError(AudioflowError, ValueError):
    pass


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml (a missing file means all defaults) and validate it."""
    p = Path(path)
    return params_from_yaml(p.read_text() if p.exists() else "", overrides, source=str(p))


def params_from_yaml(text: str, overrides: dict[str, Any] | None = None, source: str = "params.yaml") -> Params:
    """Params from the text of a params.yaml plus ``section.key`` (or ``section.sub.key``) overrides."""
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        try:
            set_key(raw, dotted, value)
        except KeyError as exc:
            raise ParamsError(f"{source}: {exc.args[0]}") from None
    return params_from_dict(raw, source=source)


def set_key(raw: dict[str, Any], dotted: str, value: Any, existing: bool = False) -> None:
    """``raw[section][...][key] = value`` for ``section.key`` or ``section.sub.key``; with
    ``existing``, only where that key is already there. A bad key raises KeyError(message)."""
    *path, key = dotted.split(".")
    if not path or not all(path) or not key:
        raise KeyError(f"override {dotted!r} is not section.key (or section.sub.key)")
    node = raw
    for part in path:
        if existing and not isinstance(node.get(part), dict):
            raise KeyError(f"{dotted}: there is no such key")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeyError(f"override {dotted!r}: {part} is not a mapping")
    if existing and key not in node:
        raise KeyError(f"{dotted}: there is no such key")
    node[key] = value


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        found: dict[str, list[str]] = {}  # a union's members (``int | "auto"``) fail apart: one line
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"] if not _UNION_MEMBER.fullmatch(str(x)))
            found.setdefault(loc.replace("validate_", "validate"), []).append(
                "unknown key" if err["type"] == "extra_forbidden" else err["msg"])
        lines = [f"  {loc}: {' or '.join(msgs)}" for loc, msgs in found.items()]
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines)) from None


def resolve_n_fft(win_length: int, n_mels: int) -> int:
    return 1 << math.ceil(math.log2(max(win_length, 8 * n_mels)))
