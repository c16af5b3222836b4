"""Device placement for training: the device to train on, small host tensors moved to it
without blocking, whether an array should live in GPU memory, the model's memory layout there,
and the mixed-precision (AMP) settings."""

from __future__ import annotations

import torch
from torch import nn

from audioflow.features import pick_device

__all__ = ["amp_setup", "fits_on", "pick_device", "place_model", "to_device"]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (random draws, indices, labels) on ``device``. To a GPU through
    page-locked memory and without blocking: a copy from pageable memory makes the host wait
    until the GPU has run everything queued before it, so every such copy in a training step
    would serialize Python's kernel launches with the kernels themselves."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def fits_on(device: torch.device, nbytes: int, share: float = 0.25) -> bool:
    """Whether an array of ``nbytes`` should live in GPU memory: on CUDA, if it takes at most
    ``share`` of the free memory (the rest is the model's, activations' and the allocator's)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def place_model(model: nn.Module, device: torch.device) -> None:
    """The model on ``device``. On a GPU, convolutions run fastest with channels-last weights
    and activations (cuDNN)."""
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)


def amp_setup(cfg, device: torch.device) -> tuple[bool, torch.dtype, torch.amp.GradScaler]:
    """(autocast on, its dtype, the gradient scaler): ``train.amp`` applies on CUDA only, in
    bf16 where the GPU supports it, else fp16 with loss scaling (the scaler is off otherwise)."""
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return use_amp, amp_dtype, scaler
