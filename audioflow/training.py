"""The training loop: AdamW, warm-up + cosine, clipping, AMP on CUDA, early stop, resume.

The best epoch (by the monitored validation metric) is chosen; with ``train.refit`` (the
default) a second pass trains afresh on train + val for that many epochs. ``model/`` holds the
model that is exported (safetensors + JSON): the refit one, or without refit the chosen one;
``model/selected/`` the chosen one, which never heard val, for evaluate to calibrate on. After
every epoch of either pass the full state goes to ``checkpoint/last.pt``, so a crash resumes
where it stopped; it carries the chosen weights too, so the checkpoint alone resumes (a fresh
pod, or DVC, which removes the stage's outputs before it reruns it). The model folder is
written when training ends.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from audioflow.checkpoint import META, SELECTED, WEIGHTS, ModelMeta, save_model
from audioflow.config import Params
from audioflow.errors import AudioflowError
from audioflow.evaluation import aggregate_files, classification_metrics, predict_rows, rows_for
from audioflow.features import Features, pick_device, scratch_compiler_cache

CHUNK = 256  # windows per block when computing statistics


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    monitor: str = "loss"
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    refit_history: list[dict] = field(default_factory=list)  # train.refit: its epochs on train + val
    refit_windows: int = 0

    def summary(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_val_" + self.monitor: self.best_metric,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            # train.refit: the exported model trained again on train + val for best_epoch epochs
            "refit_epochs": len(self.refit_history),
            "refit_windows": self.refit_windows,
            "resumed_from_epoch": self.resumed_from_epoch,  # epochs done before a crash (both passes)
            "device": self.device,
            "seconds": round(self.seconds, 2),
        }


def model_hash(params: Params, features: Features) -> str:
    """What a trained model depends on besides the data: model, train and the feature spec.

    The spec comes from the features themselves, not params.yaml, because a front that hands
    train only its own sections (ZenML) must still never resume a checkpoint of other features.
    """
    d = params.to_dict()
    model = {"name": params.model.name, "options": params.model.options}  # not the other models' options
    train = d["train"]
    if params.train.init_from:
        train = train | {"init_weights": _init_weights_hash(params.train.init_from)}
    blob = json.dumps({"model": model, "train": train, "spec": features.spec.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_key(params: Params, features: Features, split_table: pd.DataFrame) -> str:
    """What a resumable checkpoint belongs to: model, train, feature spec, data and split.

    A checkpoint resumes only a run with the same key; fronts that keep checkpoints outside the
    stage folder (the ZenML step, in the artifact store) file them under a hash of it.
    """
    train_rows, val_rows = rows_for(features, split_table, "train"), rows_for(features, split_table, "val")
    split_key = hashlib.sha256(
        json.dumps([sorted(map(str, train_rows)), sorted(map(str, val_rows))]).encode()).hexdigest()[:16]
    return f"{model_hash(params, features)}:{dataset_fingerprint(features)}:{split_key}"


def dataset_fingerprint(features: Features) -> str:
    return json.loads((features.dir / "features.json").read_text())["dataset_fingerprint"]


class FineTuneError(AudioflowError, ValueError):
    pass


def _init_dir(init_from: str) -> Path:
    """The model folder ``train.init_from`` names: a model/ folder, or a train stage folder."""
    d = Path(init_from)
    if (d / "model" / META).is_file():
        d = d / "model"
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise FineTuneError(f"train.init_from={init_from}: no audioflow model here (expected {META} and "
                            f"{WEIGHTS}, in it or in its model/ folder)")
    return d


def _init_weights_hash(init_from: str) -> str:
    # The weights' content, not the path: a retrained base model is another run.
    return hashlib.sha256((_init_dir(init_from) / WEIGHTS).read_bytes()).hexdigest()[:16]


def init_state(init_from: str, meta: ModelMeta, model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """The weights to start from: everything of the earlier model but its input statistics (this
    data's are used) and, for another label set, its classifier. Returns (state, same labels)."""
    from safetensors.torch import load_file

    d = _init_dir(init_from)
    base = ModelMeta.from_dict(json.loads((d / META).read_text()))
    theirs = {k: v for k, v in base.model_kwargs.items() if k != "n_classes"}
    ours = {k: v for k, v in meta.model_kwargs.items() if k != "n_classes"}
    if base.model_name != meta.model_name or theirs != ours:
        raise FineTuneError(
            f"train.init_from={init_from} is a {base.model_name} {theirs}; this run trains a "
            f"{meta.model_name} {ours}: set model.name and model.{base.model_name} (and features.n_mels) "
            "to the earlier model's")
    if (base.spec.level, base.spec.top_db) != (meta.spec.level, meta.spec.top_db):
        raise FineTuneError(
            f"train.init_from={init_from} was trained on features.level={base.spec.level} (top_db "
            f"{base.spec.top_db:g}); this run's features are level={meta.spec.level} (top_db {meta.spec.top_db:g}): "
            "set features.level and features.top_db to the earlier model's")
    same_labels = base.labels == meta.labels
    state = {k: v for k, v in load_file(str(d / WEIGHTS)).items()
             if k not in ("mel_mean", "mel_std") and (same_labels or not model.is_classifier(k))}
    return state, same_labels


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, object]:
    """The global RNG states training draws from (dropout on CPU, or on every CUDA device)."""
    state: dict[str, object] = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    # A checkpoint from a CPU run carries no CUDA state: resuming it on a GPU cannot be exact.
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state_all(list(state["cuda_rng"]))


def mel_statistics(arr: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mel-bin mean and std over the given windows, streaming over the memmap."""
    n_mels = arr.shape[1]
    total, sq, count = np.zeros(n_mels), np.zeros(n_mels), 0
    for i in range(0, len(rows), CHUNK):
        block = np.asarray(arr[np.sort(rows[i : i + CHUNK])], dtype=np.float64)
        total += block.sum(axis=(0, 2))
        sq += (block**2).sum(axis=(0, 2))
        count += block.shape[0] * block.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def _lr_lambda(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (random draws, indices, labels) on ``device``. To a GPU through
    page-locked memory and without blocking: a copy from pageable memory makes the host wait
    until the GPU has run everything queued before it, so every such copy in a training step
    would serialize Python's kernel launches with the kernels themselves."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def mask_draws(b: int, f: int, t: int, freq_mask: int, time_mask: int, gen: torch.Generator) -> dict:
    """SpecAugment's draws for ``b`` examples of ``f`` mel bins by ``t`` frames: each one's band
    (``freq_w``, ``freq_start``) and span (``time_w``, ``time_start``); a width of 0 is off."""
    out = {}
    for axis, size, width in (("freq", f, freq_mask), ("time", t, time_mask)):
        if not width:
            continue
        w = torch.randint(0, width + 1, (b,), generator=gen)
        out[f"{axis}_w"], out[f"{axis}_start"] = w, (torch.rand(b, generator=gen) * (size - w).clamp(min=1)).long()
    return out


def apply_masks(x: torch.Tensor, fill: torch.Tensor, draws: dict) -> torch.Tensor:
    """``mask_draws`` (on ``x``'s device) applied as one mask: the band and the span of every
    example set to the per-bin ``fill``."""
    b, f, t = x.shape
    keep = torch.ones(b, f, t, dtype=torch.bool, device=x.device)
    for axis, size in (("freq", f), ("time", t)):
        if f"{axis}_w" not in draws:
            continue
        w, start = draws[f"{axis}_w"], draws[f"{axis}_start"]
        pos = torch.arange(size, device=x.device)[None, :]
        masked = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # [b, size]
        keep &= ~(masked[:, :, None] if axis == "freq" else masked[:, None, :])
    return torch.where(keep, x, fill[None, :, None].to(x.device, x.dtype))


def spec_augment(x: torch.Tensor, fill: torch.Tensor, freq_mask: int, time_mask: int,
                 gen: torch.Generator) -> torch.Tensor:
    """One frequency band and one time span per example set to the per-bin training mean.

    Vectorized over the batch: the widths and offsets are drawn for every example at once and
    applied as one mask (no per-example Python loop).
    """
    draws = mask_draws(*x.shape, freq_mask, time_mask, gen)
    return apply_masks(x, fill, {k: to_device(v, x.device) for k, v in draws.items()})


def gain_draws(b: int, gain_db: float, gen: torch.Generator) -> torch.Tensor | None:
    """``random_gain``'s offsets in dB for ``b`` examples, uniform in +-gain_db (None when off)."""
    return (torch.rand(b, generator=gen) * 2 - 1) * gain_db if gain_db else None


def apply_gain(x: torch.Tensor, g: torch.Tensor, floor_db: float) -> torch.Tensor:
    return torch.where(x > floor_db, (x + g[:, None, None]).clamp(min=floor_db), x)


def random_gain(x: torch.Tensor, gain_db: float, floor_db: float, gen: torch.Generator) -> torch.Tensor:
    """Each example louder or quieter by a uniform +-gain_db: on log-mel (dB) a gain is an
    offset; cells at the floor (silence, padding) stay there, as zeros times a gain stay zero.
    With ``features.level: peak`` the offset moves the peak off 0 dB: a jitter of the level the
    model sees, where a gain before the front-end would cancel out."""
    g = gain_draws(x.shape[0], gain_db, gen)
    return x if g is None else apply_gain(x, to_device(g, x.device), floor_db)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, gen: torch.Generator):
    """Mix each example with another of the batch: (x, y, partner's y, weight of y), with one
    weight ~ Beta(alpha, alpha) per batch drawn from ``gen`` (so a resumed run draws the same)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen)
    return lam * x + (1 - lam) * x[to_device(perm, x.device)], y, y[to_device(perm, y.device)], lam


class _Batches:
    """A source of training batches in two halves: ``draws`` (the host's random numbers for the
    rows, CPU tensors) and ``apply`` (the arithmetic, on the device), so a CUDA graph can replay
    the second (``GraphedStep``). ``STORE_KEYS`` are the draws used where the source is (GPU
    memory when ``on_device``, else the CPU); the rest go to the training device."""

    STORE_KEYS: tuple[str, ...] = ()
    device: torch.device
    on_device: bool

    def __call__(self, rows: np.ndarray, gen: torch.Generator | None = None) -> torch.Tensor:
        """Log-mel [b, n_mels, frames] on the device for window ``rows``."""
        draws, white = self.draws(rows, gen)
        return self.apply(self.place(draws), white)

    def place(self, draws: dict) -> dict:
        """``draws`` where they are used. Only these per-row numbers cross to the device, so no
        batch-sized index array is copied."""
        at = self.device if self.on_device else torch.device("cpu")
        return {k: to_device(v, at if k in self.STORE_KEYS else self.device) for k, v in draws.items()}


class WaveformBatches(_Batches):
    """Training windows cut afresh from the decoded recordings, augmented, then featurized.

    For each window row: a random shift (``train.shift``, a fraction of the window; inside a
    long recording, or a delay of a short one inside the window), a speed factor in
    1 +- ``train.speed`` (linear interpolation), and with probability ``train.noise_prob``
    coloured Gaussian noise over the recording's extent at an SNR uniform in
    ``train.noise_snr_db``; then the same ``LogMel`` front-end featurize used, on ``device``.
    Every draw comes from the training generator, so a resumed run draws the same batches.
    The gather is one vectorized index into the flat audio store: the memmap on the CPU, or a
    copy in GPU memory when training runs there and it fits (``fits_on``).
    """

    STORE_KEYS = ("first", "length", "offset")

    def __init__(self, features: Features, cfg, device: torch.device):
        index = features.index
        self.offset = index["audio_offset"].to_numpy(np.int64)
        self.length = index["audio_length"].to_numpy(np.int64)
        self.start = index["start_sample"].to_numpy(np.int64)
        self.window = features.spec.window_samples
        self.cfg, self.device = cfg, device
        self.front = features.spec.front_end().to(device).eval()
        store = features.audio
        self.store = torch.from_numpy(np.asarray(store)).to(device) if fits_on(device, store.nbytes) else store
        self.on_device = isinstance(self.store, torch.Tensor)
        # Every batch reads as many source samples as the fastest speed factor needs: the same
        # shapes at every step, which a CUDA graph needs.
        self.span = math.ceil(self.window * (1 + cfg.speed)) + 1
        # On a GPU the white noise is drawn there, from a generator the training generator seeds
        # afresh per batch (so a resumed run draws the same): a batch's normal draws made on the
        # CPU and copied over took longer than the model's step.
        self.noise_gen = torch.Generator(device=device) if device.type == "cuda" else None

    def waveforms(self, rows: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented windows [b, window_samples] and where each holds its recording (the
        rest is zero padding, which stays zero, as at inference)."""
        draws, white = self.draws(rows, gen)
        return self._waveforms(self.place(draws), white)

    def draws(self, rows: np.ndarray, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The random draws for window ``rows``, from ``gen``: per-window numbers ([b] CPU
        tensors) and the white noise [b, window_samples] (on the GPU when training runs there)."""
        cfg, w, b = self.cfg, self.window, len(rows)
        # All draws up front and always the same number, whichever augmentations are on.
        factor = 1 + (torch.rand(b, generator=gen, dtype=torch.float64) * 2 - 1) * cfg.speed
        u_shift = torch.rand(b, generator=gen, dtype=torch.float64).numpy()
        u_noise, u_snr, u_colour = (torch.rand(b, generator=gen) for _ in range(3))
        if self.noise_gen is None:
            white = torch.randn(b, w, generator=gen)
        else:
            self.noise_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            white = torch.randn(b, w, generator=self.noise_gen, device=self.device)

        length, start = self.length[rows], self.start[rows]
        need = np.ceil(w * factor.numpy()).astype(np.int64)  # source samples one window reads
        assert need.max() < self.span, (need.max(), self.span)
        reach = cfg.shift * w
        long = length >= need
        # A long recording: the window start moves by up to +-reach, staying inside it. A short
        # one: it starts up to reach (and no more than the room left) into the window.
        moved = np.clip(np.round(start + (2 * u_shift - 1) * reach), 0, np.maximum(length - need, 0))
        delay = np.round(u_shift * np.minimum(reach, np.maximum(need - length, 0)))
        first = np.where(long, moved, -delay).astype(np.int64)  # source index of the buffer's sample 0
        lo, hi = cfg.noise_snr_db
        return {"first": torch.from_numpy(first), "length": torch.from_numpy(length),
                "offset": torch.from_numpy(self.offset[rows]), "factor": factor,
                "noise_on": u_noise < cfg.noise_prob, "snr_db": lo + u_snr * (hi - lo),
                "beta": 2 * u_colour}, white

    def apply(self, draws: dict, white: torch.Tensor) -> torch.Tensor:
        """The log-mel of the windows ``draws`` (placed) describe."""
        x = self._waveforms(draws, white)[0]
        with torch.no_grad():
            return self.front(x)

    def _waveforms(self, draws: dict, white: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, length = self.window, draws["length"]
        # The [b, span] index arithmetic runs where the store is (on the GPU when it fits there).
        pos = draws["first"][:, None] + torch.arange(self.span, device=length.device)[None, :]
        inside = to_device((pos >= 0) & (pos < length[:, None]), self.device)
        flat = draws["offset"][:, None] + torch.minimum(pos.clamp(min=0), (length - 1).clamp(min=0)[:, None])
        buf = self._gather(flat) * inside

        # Speed: output sample j reads source position j * factor, linearly interpolated.
        src = torch.arange(w, dtype=torch.float64, device=self.device)[None, :] * draws["factor"][:, None]
        i0 = src.floor().long()
        frac = (src - i0).float()
        x = buf.gather(1, i0) * (1 - frac) + buf.gather(1, i0 + 1) * frac
        valid = inside.gather(1, i0)

        if self.cfg.noise_prob:
            x = self._noise(x, valid, draws, white)
        return x, valid

    def _gather(self, flat: torch.Tensor) -> torch.Tensor:
        if self.on_device:
            return self.store[flat].float()
        return to_device(torch.from_numpy(np.asarray(self.store[flat.numpy()], dtype=np.float32)), self.device)

    def _noise(self, x: torch.Tensor, valid: torch.Tensor, draws: dict, white: torch.Tensor) -> torch.Tensor:
        """Noise of power 1/f^beta (beta uniform in [0, 2]: white to brown) over the recording's
        samples, scaled to an SNR against the recording's power in the window."""
        w = x.shape[1]
        spectrum = torch.fft.rfft(white.to(self.device))
        k = torch.arange(spectrum.shape[1], dtype=torch.float32, device=self.device).clamp(min=1)
        noise = torch.fft.irfft(spectrum * k[None, :].pow(-draws["beta"][:, None] / 2), n=w)
        mask = valid.float()
        count = mask.sum(dim=1).clamp(min=1)
        noise = noise * mask  # unit power over the recording's extent, nothing over the padding
        noise = noise / (noise.square().sum(dim=1, keepdim=True) / count[:, None]).sqrt().clamp(min=1e-12)
        power = (x.square() * mask).sum(dim=1) / count
        scale = torch.sqrt(power / 10 ** (draws["snr_db"] / 10)) * draws["noise_on"]
        return x + noise * scale[:, None]


def fits_on(device: torch.device, nbytes: int, share: float = 0.25) -> bool:
    """Whether an array of ``nbytes`` should live in GPU memory: on CUDA, if it takes at most
    ``share`` of the free memory (the rest is the model's, activations' and the allocator's)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


class FeatureBatches(_Batches):
    """Stored log-mel windows by row: from the memmap, or from GPU memory when training runs
    on CUDA and the array fits there (no host-to-device copy per batch). The only draw is the
    rows."""

    STORE_KEYS = ("rows",)

    def __init__(self, arr: np.ndarray, device: torch.device):
        self.device = device
        self.arr = torch.from_numpy(np.asarray(arr)).to(device) if fits_on(device, arr.nbytes) else arr
        self.on_device = isinstance(self.arr, torch.Tensor)

    def draws(self, rows: np.ndarray, gen: torch.Generator | None = None) -> tuple[dict, None]:
        return {"rows": torch.from_numpy(rows)}, None

    def apply(self, draws: dict, white: None) -> torch.Tensor:
        if self.on_device:
            return self.arr[draws["rows"]]
        x = torch.from_numpy(np.asarray(self.arr[draws["rows"].numpy()], dtype=np.float32))
        return to_device(x, self.device)  # page-locked, so the copy overlaps compute


def class_weights(targets: torch.Tensor, n_classes: int, how: str) -> torch.Tensor | None:
    """``balanced``: n / (k * n_c) for each class c of the training windows (1 where even)."""
    if how == "none":
        return None
    counts = torch.bincount(targets, minlength=n_classes).float()
    return torch.where(counts > 0, len(targets) / (n_classes * counts.clamp(min=1)), torch.zeros(()))


def loss_fn(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, cfg) -> torch.Tensor:
    """Cross-entropy with label smoothing and class weights, or focal loss on top of it."""
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="none")
    p_true = torch.softmax(logits.float(), dim=1).gather(1, y[:, None])[:, 0]
    focal = (1 - p_true).pow(cfg.focal_gamma) * ce
    w = weight[y] if weight is not None else torch.ones_like(focal)
    return (w * focal).sum() / w.sum()


def capturable_loss_fn(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, cfg) -> torch.Tensor:
    """``loss_fn``'s value (to rounding) without waiting for the GPU, so a CUDA graph can hold
    it: PyTorch's label-smoothed, class-weighted cross-entropy selects the non-ignored targets
    on the host. The same definitions: the smoothing term weighs each class by its weight, and
    the mean is over the examples' weights."""
    eps = cfg.label_smoothing
    logp = torch.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, y[:, None])[:, 0]
    w = weight[y] if weight is not None else torch.ones_like(nll)
    if cfg.loss == "cross_entropy":
        smooth = -(logp * weight[None, :] if weight is not None else logp).mean(dim=1)
        return ((1 - eps) * (w * nll).sum() + eps * smooth.sum()) / w.sum()
    ce = (1 - eps) * nll - eps * logp.mean(dim=1)  # unweighted per example, as loss_fn's
    focal = (1 - logp.exp().gather(1, y[:, None])[:, 0]).pow(cfg.focal_gamma) * ce
    return (w * focal).sum() / w.sum()


def epoch_order(train_rows: np.ndarray, train_targets: torch.Tensor, sampler: str,
                gen: torch.Generator) -> np.ndarray:
    """The training windows of one epoch: shuffled, or drawn class-balanced (with replacement)."""
    if sampler == "shuffle":
        return train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
    counts = torch.bincount(train_targets).float()
    p = 1.0 / counts[train_targets]
    return train_rows[torch.multinomial(p, len(train_rows), replacement=True, generator=gen).numpy()]


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or free) every parameter outside the classifier; a frozen backbone's batch norms
    keep their statistics (eval mode) too. Call after ``model.train()``."""
    for name, p in model.named_parameters():
        if not model.is_classifier(name):
            p.requires_grad_(not frozen)
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not model.is_classifier(name):
                module.eval()


def _score(metrics: dict, loss: float, monitor: str) -> float:
    # Higher is better for every monitored quantity; loss is negated.
    return -loss if monitor == "loss" else metrics[monitor]


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    features: Features,
    split_table: pd.DataFrame,
    params: Params,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = True,
    on_checkpoint: Callable[[Path], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train the configured model on the train split, select on val, save the best.

    ``on_checkpoint(path)`` is called after every epoch with the freshly written
    ``checkpoint/last.pt``, e.g. to copy it where a restarted job finds it. ``on_epoch(row)``
    gets every epoch's figures (the ``history.csv`` row) as soon as they exist, for live
    progress; a resumed run first replays the epochs before the crash.
    """
    with scratch_compiler_cache(compiling=params.train.compile):
        return _train(features, split_table, params, Path(out_dir), progress, resume, on_checkpoint, on_epoch)


@dataclass
class _Fit:
    """One training pass: the model and everything that updates it, seeded afresh."""

    model: nn.Module
    forward: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    batches: Callable
    weight: torch.Tensor | None
    rows: np.ndarray
    use_amp: bool
    amp_dtype: torch.dtype
    floor_db: float  # the features' value of silence and padding (random_gain leaves it)
    shape: tuple[int, int]  # a window's log-mel: mel bins, frames
    graphable: bool  # full batches may be replayed as a CUDA graph (``GraphedStep``)
    graph: GraphedStep | None = None  # captured at the first full batch that may use it

    def state(self, device: torch.device) -> dict:
        """What a checkpoint needs to continue this pass exactly."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "generator": self.gen.get_state(), **rng_state(device)}

    def restore(self, state: dict, device: torch.device) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["generator"])
        restore_rng_state(state, device)


def _start(features: Features, params: Params, meta: ModelMeta, rows: np.ndarray, targets: torch.Tensor,
           device: torch.device, epochs: int, progress: bool) -> _Fit:
    """A fresh model (or ``train.init_from``'s weights), normalized on ``rows``, with its
    optimizer, warm-up + cosine schedule over ``epochs`` and random generator."""
    from tqdm import tqdm

    cfg = params.train
    seed_everything(cfg.seed)
    model = meta.build()
    if cfg.init_from:
        state, same_labels = init_state(cfg.init_from, meta, model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k in ("mel_mean", "mel_std") or model.is_classifier(k) for k in missing), \
            (missing, unexpected)
        if progress:
            tqdm.write(f"train: starting from {cfg.init_from}" + ("" if same_labels else " with a new classifier "
                       f"for {len(meta.labels)} labels"))
    mean, std = mel_statistics(features.array, rows)
    model.set_normalization(mean, std)
    batches = WaveformBatches(features, cfg, device) if cfg.waveform_augmentation else FeatureBatches(
        features.array, device)
    # On a GPU, convolutions run fastest with channels-last weights and activations (cuDNN).
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    forward = torch.compile(model) if cfg.compile else model  # same parameters; model is what is saved
    backbone = [p for n, p in model.named_parameters() if not model.is_classifier(n)]
    classifier = [p for n, p in model.named_parameters() if model.is_classifier(n)]

    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    # Two groups: the backbone at lr * backbone_lr_scale, the classifier at lr (the same update
    # as one group when the scale is 1).
    # On a GPU the fused AdamW: one kernel for all parameters instead of several per tensor.
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale},
                                   {"params": classifier, "lr": cfg.lr}], weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(round(cfg.warmup_epochs * steps_per_epoch), steps_per_epoch * epochs)
    )
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    # A CUDA graph replays fixed kernels on fixed memory: the batches' source must be in GPU
    # memory, and mixup (a weight drawn per batch on the host), fp16's loss scaling (a check of
    # the gradients on the host) and torch.compile's own graphs stay eager.
    graphable = (cfg.cuda_graph and device.type == "cuda" and batches.on_device and not cfg.mixup
                 and not cfg.compile and not scaler.is_enabled())
    gen = torch.Generator().manual_seed(cfg.seed)
    weight = class_weights(targets[rows], len(meta.labels), cfg.class_weight)
    return _Fit(model, forward, optimizer, scheduler, scaler, gen, batches,
                weight.to(device) if weight is not None else None, rows, use_amp, amp_dtype,
                features.spec.floor_db, tuple(features.array.shape[1:]), graphable)


def _draws(fit: _Fit, rows: np.ndarray, targets: torch.Tensor, cfg) -> tuple[dict, torch.Tensor | None]:
    """Every random number of one training step, drawn from the training generator in a fixed
    order (the batch's, the gains, the masks), and the labels: CPU tensors, plus the batch's
    white noise where it has some."""
    draws, white = fit.batches.draws(rows, fit.gen)
    gain = gain_draws(len(rows), cfg.gain_db, fit.gen)
    if gain is not None:
        draws["gain"] = gain
    draws |= mask_draws(len(rows), *fit.shape, cfg.freq_mask, cfg.time_mask, fit.gen)
    draws["y"] = targets[rows]
    return draws, white


def _loss(fit: _Fit, draws: dict, white: torch.Tensor | None, cfg, device: torch.device,
          captured: bool = False) -> torch.Tensor:
    """The step's loss from its ``draws`` (placed on the device): the batch, augmented, through
    the model. Mixup, if on, draws its weight and partners here. ``captured``: inside a CUDA
    graph (no autocast cache of cast weights, a loss that does not wait for the GPU)."""
    x = fit.batches.apply(draws, white)  # [b, n_mels, frames] on device
    if "gain" in draws:
        x = apply_gain(x, draws["gain"], fit.floor_db)
    x = apply_masks(x, fit.model.mel_mean, draws)
    y = y2 = draws["y"]
    lam = 1.0
    if cfg.mixup:
        x, y, y2, lam = mixup(x, y, cfg.mixup, fit.gen)
    criterion = capturable_loss_fn if captured else loss_fn
    with torch.autocast(device.type, dtype=fit.amp_dtype, enabled=fit.use_amp, cache_enabled=not captured):
        logits = fit.forward(x)
        loss = criterion(logits, y, fit.weight, cfg)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * criterion(logits, y2, fit.weight, cfg)
    return loss


class NotCapturable(RuntimeError):
    """The training step waits for the GPU somewhere, so it cannot be a CUDA graph."""


def _set_sync_debug_mode(mode: int | str) -> None:
    with warnings.catch_warnings():  # "a prototype feature": it is what tells us
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode(mode)


@contextmanager
def _sync_check():
    """CUDA operations that wait for the GPU raise ``NotCapturable`` inside the block."""
    previous = torch.cuda.get_sync_debug_mode()
    _set_sync_debug_mode("error")
    try:
        yield
    except RuntimeError as exc:
        if "synchronizing CUDA operation" in str(exc):
            raise NotCapturable(str(exc)) from exc
        raise
    finally:
        _set_sync_debug_mode(previous)


class GraphedStep:
    """A training step on a GPU, captured once as a CUDA graph and replayed for each full batch.

    A small model's step is a few hundred kernels of a few microseconds each; launched one at a
    time from Python, the GPU mostly waits (on an H100 the default CNN's eager step took about
    10 ms for 1 ms of GPU work). Here the host draws the batch's random numbers exactly as the
    eager step does (``_draws``), copies them in one transfer into fixed buffers, and one replay
    runs the augmentation, the front-end, SpecAugment, the forward and backward passes and the
    gradient clipping, into gradients that stay where the graph writes them. The fused AdamW
    step and the schedule follow eagerly. The warm-up passes before the capture leave no trace:
    batch-norm statistics and the CUDA random state are put back. They run with CUDA's
    synchronization check on: an operation that waits for the GPU cannot be captured, and
    raises ``NotCapturable`` before any capture starts.
    """

    def __init__(self, fit: _Fit, cfg, device: torch.device, draws: dict, white: torch.Tensor | None):
        self.fit, self.cfg, self.device = fit, cfg, device
        self.dtypes = {k: v.dtype for k, v in draws.items()}
        self.packed = torch.empty(len(draws), len(draws["y"]), dtype=torch.float64, device=device)
        self.white = None if white is None else torch.empty_like(white)
        self._fill(draws, white)
        model = fit.model
        buffers = [t.detach().clone() for t in model.buffers()]
        rng = torch.cuda.get_rng_state(device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), _sync_check():
                for _ in range(3):  # cuDNN picks its kernels, the allocator fills up
                    model.zero_grad(set_to_none=True)
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            model.zero_grad(set_to_none=True)  # the capture allocates the gradients it writes
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._body()
        except Exception:
            model.zero_grad(set_to_none=True)
            raise
        finally:
            with torch.no_grad():
                for t, saved in zip(model.buffers(), buffers):
                    t.copy_(saved)
            torch.cuda.set_rng_state(rng, device)

    def _fill(self, draws: dict, white: torch.Tensor | None) -> None:
        # Every per-window number is exact in float64 (indices, labels, float32 draws, flags).
        host = torch.stack([draws[k].to(torch.float64) for k in self.dtypes]).pin_memory()
        self.packed.copy_(host, non_blocking=True)
        if white is not None:
            self.white.copy_(white)

    def _body(self) -> torch.Tensor:
        draws = {k: self.packed[i].to(dtype) for i, (k, dtype) in enumerate(self.dtypes.items())}
        loss = _loss(self.fit, draws, self.white, self.cfg, self.device, captured=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.fit.model.parameters(), self.cfg.grad_clip)
        return loss.detach()

    def __call__(self, draws: dict, white: torch.Tensor | None) -> torch.Tensor:
        """Run the step on these draws; the loss (overwritten by the next replay)."""
        self._fill(draws, white)
        self.graph.replay()
        return self.loss


def _step_loss(fit: _Fit, rows: np.ndarray, targets: torch.Tensor, cfg, device: torch.device,
               frozen: bool) -> torch.Tensor:
    """One step's forward and backward, leaving clipped gradients for the optimizer: replayed
    as a CUDA graph where it may be (a full batch, the backbone not frozen), else eagerly."""
    draws, white = _draws(fit, rows, targets, cfg)
    if fit.graphable and not frozen and len(rows) == cfg.batch_size:
        if fit.graph is None:
            try:
                fit.graph = GraphedStep(fit, cfg, device, draws, white)
            except NotCapturable as exc:  # e.g. a registered model that reads a value on the host
                fit.graphable = False
                warnings.warn(f"train: the training step waits for the GPU, so it cannot be replayed as a CUDA "
                              f"graph and runs eagerly ({exc}). Set train.cuda_graph: false to silence this.",
                              stacklevel=2)
        if fit.graph is not None:
            return fit.graph(draws, white)
    loss = _loss(fit, fit.batches.place(draws), white, cfg, device)
    # A graph's gradients stay where it writes them: zeroed, not dropped, between its replays.
    fit.optimizer.zero_grad(set_to_none=fit.graph is None)
    fit.scaler.scale(loss).backward()
    fit.scaler.unscale_(fit.optimizer)
    nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
    return loss


def _epoch(fit: _Fit, targets: torch.Tensor, epoch: int, cfg, device: torch.device) -> dict:
    """One epoch over ``fit.rows``, augmented: the mean training loss and the time it took."""
    model = fit.model
    model.train()
    frozen = epoch < cfg.freeze_epochs
    set_backbone_frozen(model, frozen)
    if frozen:  # its gradients are for every parameter
        fit.graph = None
    order = epoch_order(fit.rows, targets[fit.rows], cfg.sampler, fit.gen)
    # Summed on the device: a float() per batch would wait for the GPU at every step.
    loss_sum, seen = torch.zeros((), dtype=torch.float64, device=device), 0
    te = time.perf_counter()
    for i in range(0, len(order), cfg.batch_size):
        rows = order[i : i + cfg.batch_size]
        if len(rows) < 2:  # batch norm cannot train on a single example
            continue
        loss = _step_loss(fit, np.sort(rows), targets, cfg, device, frozen)
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        fit.scheduler.step()
        loss_sum += loss.detach().double() * len(rows)
        seen += len(rows)
    train_loss = float(loss_sum) / max(seen, 1)  # waits for the device's last batch
    return {"train_loss": train_loss, "backbone_frozen": frozen,
            "train_seconds": round(time.perf_counter() - te, 3), "lr": fit.optimizer.param_groups[-1]["lr"]}


def _train(features: Features, split_table: pd.DataFrame, params: Params, out: Path, progress: bool,
           resume: bool, on_checkpoint: Callable[[Path], None] | None,
           on_epoch: Callable[[dict], None] | None) -> TrainResult:
    from tqdm import tqdm

    cfg = params.train
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    labels = features.labels
    label_pos = {lab: i for i, lab in enumerate(labels)}
    arr = features.array
    # Copies: pandas hands out read-only arrays, and torch warns when it indexes with one.
    train_rows, val_rows = (np.array(rows_for(features, split_table, part)) for part in ("train", "val"))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(f"need train and val windows, got {len(train_rows)} and {len(val_rows)}")
    targets = torch.tensor(features.index["label"].map(label_pos).to_numpy(), dtype=torch.long)

    model_kwargs = {"n_mels": features.spec.n_mels, "n_classes": len(labels), **params.model.options}
    meta = ModelMeta(params.model.name, model_kwargs, labels, features.spec, model_hash(params, features),
                     dataset_fingerprint(features))

    result = TrainResult(out / "model", monitor=cfg.monitor, device=str(device))
    best_score, bad_epochs, start_epoch = -math.inf, 0, 0
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best epoch's weights
    ckpt_path = out / "checkpoint" / "last.pt"
    # Resume only the same run: same model, training, features, data and split.
    key = run_key(params, features, split_table)
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("run_key") != key:
            state = None
    phase = state.get("phase", "select") if state is not None else "select"

    def checkpoint(fit: _Fit, **extra) -> None:
        _atomic_torch_save({"run_key": key, **fit.state(device), "best_score": best_score, "bad_epochs": bad_epochs,
                            "best_epoch": result.best_epoch, "best_metric": result.best_metric,
                            "history": json.dumps(result.history), "best_model": best_state,
                            "stopped_early": result.stopped_early, **extra}, ckpt_path)
        if on_checkpoint is not None:
            on_checkpoint(ckpt_path)

    if state is not None:
        best_state = state.get("best_model")
        best_score, bad_epochs = state["best_score"], state["bad_epochs"]
        result.history = json.loads(state["history"])
        result.best_epoch, result.best_metric = state["best_epoch"], state["best_metric"]
        result.stopped_early = bool(state.get("stopped_early", False))
        result.refit_history = json.loads(state.get("refit_history", "[]"))
        result.resumed_from_epoch = len(result.history) + len(result.refit_history)
        if progress:
            tqdm.write(f"train: resuming from {ckpt_path} after epoch {result.resumed_from_epoch}"
                       + (" (refit on train + val)" if phase == "refit" else ""))

    for row in result.history if on_epoch is not None else []:  # the epochs before a crash
        on_epoch(row)
    t0 = time.perf_counter()
    if phase == "select":
        fit = _start(features, params, meta, train_rows, targets, device, cfg.epochs, progress)
        if state is not None:
            fit.restore(state, device)
            start_epoch = state["epoch"]
        epochs = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs,
                      desc="train", unit="epoch", disable=not progress, leave=False)
        for epoch in epochs:
            if bad_epochs >= cfg.patience:
                result.stopped_early = True
                break
            te = time.perf_counter()
            row = {"epoch": epoch + 1, **_epoch(fit, targets, epoch, cfg, device)}
            val_sorted = np.sort(val_rows)
            val_logits = predict_rows(fit.model, arr, val_sorted, device)
            val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), targets[val_sorted]))
            per_file = aggregate_files(features, val_sorted, val_logits)
            m = classification_metrics(per_file["actual"].map(label_pos).to_numpy(),
                                       per_file["predicted"].map(label_pos).to_numpy(), labels)
            row |= {"val_loss": val_loss, "val_accuracy": m["accuracy"],
                    "val_balanced_accuracy": m["balanced_accuracy"], "val_macro_f1": m["macro_f1"],
                    "seconds": round(time.perf_counter() - te, 3)}
            row = {k: row[k] for k in HISTORY_COLUMNS}
            result.history.append(row)
            score = _score(m, val_loss, cfg.monitor)
            if score > best_score:
                best_score, bad_epochs = score, 0
                result.best_epoch = epoch + 1
                result.best_metric = val_loss if cfg.monitor == "loss" else m[cfg.monitor]
                best_state = {k: v.detach().cpu().clone() for k, v in fit.model.state_dict().items()}
            else:
                bad_epochs += 1
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_f1=f"{m['macro_f1']:.3f}")
            checkpoint(fit, phase="select", epoch=epoch + 1)
            if on_epoch is not None:
                on_epoch(row)
        else:
            result.stopped_early = bad_epochs >= cfg.patience and len(result.history) < cfg.epochs
        if best_state is None:
            raise AudioflowError("train: no epoch gave a finite validation score (the loss is not a number): "
                                 "lower train.lr or check the features")
    final = best_state
    if cfg.refit:
        final = _refit(features, params, meta, np.sort(np.concatenate([train_rows, val_rows])), targets, device,
                       result, state if phase == "refit" else None, checkpoint, progress, on_epoch)
    # Written at the end only (the checkpoint carries the weights until then): a crash leaves
    # the previous model or none, never one of this run's passes beside another run's.
    _save_state(meta, best_state, out / "model" / SELECTED)
    _save_state(meta, final, out / "model")
    result.seconds = time.perf_counter() - t0
    write_history(result.history, out, result.refit_history)
    (out / "train.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    # The checkpoint exists to survive a crash. A finished run removes it, so the next run
    # (new code, `dvc repro -f`) trains afresh instead of "resuming" a completed one.
    ckpt_path.unlink(missing_ok=True)
    return result


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1",
                   "lr", "backbone_frozen", "seconds", "train_seconds")


def _save_state(meta: ModelMeta, state: dict[str, torch.Tensor], folder: Path) -> None:
    model = meta.build()
    model.load_state_dict(state)
    save_model(model, meta, folder)


def _refit(features: Features, params: Params, meta: ModelMeta, rows: np.ndarray, targets: torch.Tensor,
           device: torch.device, result: TrainResult, state: dict | None, checkpoint: Callable,
           progress: bool, on_epoch: Callable[[dict], None] | None) -> dict[str, torch.Tensor]:
    """``train.refit``: train afresh on train + val for the number of epochs chosen on val (the
    warm-up + cosine schedule fitted to them, so it ends annealed), so the model that is
    exported has heard every group but the test's. Returns its weights."""
    from tqdm import tqdm

    cfg = params.train
    fit = _start(features, params, meta, rows, targets, device, result.best_epoch, progress=False)
    start = 0
    if state is not None:
        fit.restore(state, device)
        start = state["epoch"]
    for row in result.refit_history[:start] if on_epoch is not None else []:
        on_epoch(_refit_row(row, len(result.history)))
    result.refit_windows = len(rows)
    epochs = tqdm(range(start, result.best_epoch), initial=start, total=result.best_epoch,
                  desc="refit on train + val", unit="epoch", disable=not progress, leave=False)
    for epoch in epochs:
        te = time.perf_counter()
        row = {"epoch": epoch + 1, **_epoch(fit, targets, epoch, cfg, device)}
        row["seconds"] = round(time.perf_counter() - te, 3)
        result.refit_history.append(row)
        epochs.set_postfix(loss=f"{row['train_loss']:.3f}")
        checkpoint(fit, phase="refit", epoch=epoch + 1, refit_history=json.dumps(result.refit_history))
        if on_epoch is not None:
            on_epoch(_refit_row(row, len(result.history)))
    return {k: v.detach().cpu() for k, v in fit.model.state_dict().items()}


def _refit_row(row: dict, chosen_from: int) -> dict:
    """A refit epoch for live progress: ``epoch`` counts on after the ``chosen_from`` epochs of the
    first pass (a step axis that only grows), its figures named apart (``refit_epoch``, ``refit_*``)."""
    return {"epoch": chosen_from + row["epoch"], **{f"refit_{k}": v for k, v in row.items()}}


def write_history(history: list[dict], out_dir: Path, refit: list[dict] = ()) -> None:
    """history.csv and training_curves.png (loss and validation metrics per epoch; the refit's
    training loss as a third curve, ``refit`` its rows). history.csv holds the epochs chosen
    from; train.json counts the refit's."""
    if not history:
        return
    frame = pd.DataFrame(history)
    frame.to_csv(out_dir / "history.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    a.plot(frame["epoch"], frame["train_loss"], label="train")
    a.plot(frame["epoch"], frame["val_loss"], label="val")
    if refit:
        again = pd.DataFrame(refit)
        a.plot(again["epoch"], again["train_loss"], "--", label="train + val (refit)")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.set_title("Loss")
    a.legend()
    for col in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1"):
        b.plot(frame["epoch"], frame[col], label=col.removeprefix("val_"))
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.set_title("Validation (per recording)")
    b.legend(loc="lower right")
    fig.savefig(out_dir / "training_curves.png", dpi=100)
    plt.close(fig)
