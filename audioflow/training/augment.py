"""Augmentation of log-mel training batches: SpecAugment masks, a random gain per example, and
mixup. Each is split into its host-side random draws (from the training generator, so a resumed
run draws the same) and the arithmetic on the device, which a CUDA graph can replay."""

from __future__ import annotations

import numpy as np
import torch

from audioflow.training.device import to_device


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
