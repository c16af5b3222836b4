"""The start of a training pass: a fresh model (or ``train.init_from``'s weights) normalized on
its training windows, placed on the device, with its AdamW optimizer, warm-up + cosine schedule,
AMP settings, batch source, class weights and random generator, all seeded from ``train.seed``."""

from __future__ import annotations

import math

import numpy as np
import torch

from audioflow.checkpoint import ModelMeta
from audioflow.config import Params
from audioflow.features import Features
from audioflow.training.batches import FeatureBatches, WaveformBatches
from audioflow.training.device import amp_setup, place_model
from audioflow.training.finetune import init_state
from audioflow.training.loss import class_weights
from audioflow.training.resume import seed_everything
from audioflow.training.state import PassState

CHUNK = 256  # windows per block when computing statistics


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

def start_pass(features: Features, params: Params, meta: ModelMeta, rows: np.ndarray, targets: torch.Tensor,
               device: torch.device, epochs: int, progress: bool) -> PassState:
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
    place_model(model, device)
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
    use_amp, amp_dtype, scaler = amp_setup(cfg, device)
    # A CUDA graph replays fixed kernels on fixed memory: the batches' source must be in GPU
    # memory, and mixup (a weight drawn per batch on the host), fp16's loss scaling (a check of
    # the gradients on the host) and torch.compile's own graphs stay eager.
    graphable = (cfg.cuda_graph and device.type == "cuda" and batches.on_device and not cfg.mixup
                 and not cfg.compile and not scaler.is_enabled())
    gen = torch.Generator().manual_seed(cfg.seed)
    weight = class_weights(targets[rows], len(meta.labels), cfg.class_weight)
    return PassState(model, forward, optimizer, scheduler, scaler, gen, batches,
                     weight.to(device) if weight is not None else None, rows, use_amp, amp_dtype,
                     features.spec.floor_db, tuple(features.array.shape[1:]), graphable)
