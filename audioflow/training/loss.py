"""The training objective and the order of the training windows: class weights, cross-entropy
or focal loss (and a variant a CUDA graph can hold), and each epoch's shuffled or class-balanced
order."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
