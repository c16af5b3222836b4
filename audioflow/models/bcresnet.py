"""BC-ResNet: broadcasted residual learning (Kim, Chang, Lee, Sung; Interspeech 2021).

A keyword-spotting network for small footprints that generalizes to unseen speakers. Each block
has a 2-D part that convolves along frequency only (depthwise, with sub-spectral
normalization: groups of mel bins normalized apart, since their statistics differ), and a 1-D
part that averages over frequency, convolves along time (depthwise, dilated) and is
broadcast back over every frequency, so temporal context costs 1-D, not 2-D, compute.

Everything here exports to ONNX as plain convolutions, batch norms, reshapes and means.
"""

from __future__ import annotations

import torch
from torch import nn

from audioflow.config import BCResNetOptions
from audioflow.models import LogMelModel, register_model

STAGES = ((8, 2, 1, 1), (12, 2, 2, 2), (16, 4, 2, 4), (20, 4, 1, 8))  # (channels/w, blocks, freq stride, dilation)


class SubSpectralNorm(nn.Module):
    """Batch norm per (channel, frequency group); plain batch norm when F is not divisible."""

    def __init__(self, channels: int, subbands: int):
        super().__init__()
        self.subbands = subbands
        self.bn = nn.BatchNorm2d(channels * subbands)
        self.plain = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        if self.subbands == 1 or f % self.subbands:
            return self.plain(x)
        return self.bn(x.reshape(b, c * self.subbands, f // self.subbands, t)).reshape(b, c, f, t)


class BCResBlock(nn.Module):
    """x + f2(x) + broadcast(f1(mean_F(f2(x)))), then ReLU; a transition block (new width or
    a frequency stride) starts with a 1x1 convolution and drops the identity path."""

    def __init__(self, c_in: int, c_out: int, freq_stride: int, dilation: int, dropout: float, subbands: int):
        super().__init__()
        self.transition = c_in != c_out or freq_stride != 1
        self.pre = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
                    if self.transition else nn.Identity())
        self.f2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, (3, 1), stride=(freq_stride, 1), padding=(1, 0), groups=c_out, bias=False),
            SubSpectralNorm(c_out, subbands),
        )
        self.f1 = nn.Sequential(
            nn.Conv2d(c_out, c_out, (1, 3), padding=(0, dilation), dilation=(1, dilation), groups=c_out, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        aux = self.f2(x)
        out = self.f1(aux.mean(dim=2, keepdim=True))  # [B, C, 1, T]: time only
        return self.act(out + aux + (0 if self.transition else x))


class BCResNet(LogMelModel):
    """[batch, n_mels, frames] log-mel (dB) -> [batch, n_classes] logits."""

    classifier = ("classify",)

    def __init__(self, n_mels: int, n_classes: int, width: float = 2.0, dropout: float = 0.1, subbands: int = 4):
        super().__init__(n_mels, n_classes)
        c = [max(4, round(k * width)) for k, *_ in STAGES]
        stem = max(4, round(16 * width))
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 5, stride=(2, 1), padding=2, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU())
        blocks, c_in = [], stem
        for c_out, (_, n, stride, dilation) in zip(c, STAGES):
            for i in range(n):
                blocks.append(BCResBlock(c_in, c_out, stride if i == 0 else 1, dilation, dropout, subbands))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        head = max(8, round(32 * width))
        self.neck = nn.Sequential(
            nn.Conv2d(c_in, c_in, (5, 5), padding=2, groups=c_in, bias=False),
            nn.Conv2d(c_in, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU(),
        )
        self.classify = nn.Conv2d(head, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.standardize(x).unsqueeze(1)))
        x = self.neck(x).mean(dim=(2, 3), keepdim=True)  # average over frequency and time
        return self.classify(x).flatten(1)


@register_model("bcresnet", BCResNetOptions)
def bcresnet(n_mels: int, n_classes: int, width: float = 2.0, dropout: float = 0.1, subbands: int = 4) -> BCResNet:
    return BCResNet(n_mels=n_mels, n_classes=n_classes, width=width, dropout=dropout, subbands=subbands)
