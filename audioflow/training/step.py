"""One training step's forward half, shared by the eager step and the CUDA graph: every random
number of the step drawn on the host in a fixed order (``step_draws``), then the batch built,
augmented and run through the model to the loss (``step_loss``)."""

from __future__ import annotations

import numpy as np
import torch

from audioflow.training.augment import apply_gain, apply_masks, gain_draws, mask_draws, mixup
from audioflow.training.loss import capturable_loss_fn, loss_fn
from audioflow.training.state import PassState


def step_draws(fit: PassState, rows: np.ndarray, targets: torch.Tensor, cfg) -> tuple[dict, torch.Tensor | None]:
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


def step_loss(fit: PassState, draws: dict, white: torch.Tensor | None, cfg, device: torch.device,
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
