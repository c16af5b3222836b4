"""A small CNN over log-mel input that keeps frequency information until the head."""

from __future__ import annotations

import torch
from torch import nn

from audioflow.config import CNNOptions
from audioflow.models import LogMelModel, register_model


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ConvBlock(nn.Sequential):
    """3x3 conv + batch norm + ReLU, then 2x2 max pooling and dropout."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__(
            *conv_bn_relu(c_in, c_out),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


class LogMelCNN(LogMelModel):
    """[batch, n_mels, frames] log-mel (dB) -> [batch, n_classes] logits.

    ``channels[0]`` is a stride-2 stem; each further entry is one conv block with pooling.

    Input is standardised per mel bin with statistics of the training set (buffers, so they
    travel in the checkpoint and the ONNX graph). Time is pooled (mean + max) after the conv
    blocks while the frequency axis stays, because where energy sits in frequency is often
    what separates classes (a murmur band, a formant).
    """

    def __init__(self, n_mels: int, n_classes: int, channels: list[int] | tuple[int, ...] = (16, 32, 64, 128),
                 dropout: float = 0.2):
        super().__init__(n_mels, n_classes)
        if not channels:
            raise ValueError("channels must name at least one conv block")
        # A stride-2 stem halves time and frequency before the first full-width activations:
        # most of a CNN's CPU time is spent at input resolution.
        blocks: list[nn.Module] = [nn.Sequential(*conv_bn_relu(1, channels[0], stride=2))]
        c_in = channels[0]
        for c in channels[1:]:
            blocks.append(ConvBlock(c_in, c, dropout))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        f_out = n_mels
        for _ in channels:
            f_out = -(-f_out // 2)  # the stem's stride and each block's ceil_mode pooling
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * c_in * f_out, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, n_mels, frames] -> [batch, n_classes]."""
        x = self.standardize(x)
        x = self.blocks(x.unsqueeze(1))  # [B, C, F', T']
        pooled = torch.cat([x.mean(dim=3), x.amax(dim=3)], dim=1)  # [B, 2C, F']
        return self.head(pooled.flatten(1))


@register_model("cnn", CNNOptions)
def cnn(n_mels: int, n_classes: int, channels=(16, 32, 64, 128), dropout: float = 0.2) -> LogMelCNN:
    return LogMelCNN(n_mels=n_mels, n_classes=n_classes, channels=list(channels), dropout=dropout)
