"""The log-mel front-end: ``LogMel`` (waveform -> dB log-mel, torchaudio STFT + mel scale),
``power_to_db``, the ``FeatureSpec`` that rebuilds it and cuts windows, and ``log_mel_windows``
(featurize's batching of windows by length).

Training and featurizing run ``LogMel``. The exported ONNX graph runs ``export.ConvLogMel``
instead: the same computation with the STFT written as a strided convolution (ONNX Runtime's
STFT kernel is slow), built from this module's window and mel filterbank; every export's parity
check compares the graph's logits with this ``LogMel``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchaudio
from torch import nn

from audioflow.config import FeaturesConfig, resolve_n_fft

LOG_FLOOR = 1e-6  # power floor before the log: -60 dB, well below any real recording's noise
LEVELS = ("peak", "absolute")  # features.level


def power_to_db(mel: torch.Tensor, level: str = "absolute", top_db: float = 80.0) -> torch.Tensor:
    """Mel power [batch, n_mels, frames] -> dB, each item on its own.

    ``absolute``: dB re full scale, floored at ``LOG_FLOOR`` (-60 dB). ``peak``: dB re the
    item's loudest cell (0 dB), floored at ``-top_db``, so a recording's gain (a quiet device, a
    distant speaker) does not move its features; an item whose peak is below ``LOG_FLOOR`` is
    taken re ``LOG_FLOOR``, so near-silence stays quiet instead of being raised to 0 dB.
    """
    if level == "peak":
        ref = mel.amax(dim=(-2, -1), keepdim=True).clamp(min=LOG_FLOOR)
        return 10.0 * torch.log10(torch.clamp(mel / ref, min=10.0 ** (-top_db / 10.0)))
    return 10.0 * torch.log10(torch.clamp(mel, min=LOG_FLOOR))


def floor_db(level: str = "absolute", top_db: float = 80.0) -> float:
    """The dB value of silence and of zero padding (``power_to_db`` of zero power)."""
    return -float(top_db) if level == "peak" else 10.0 * math.log10(LOG_FLOOR)


class LogMel(nn.Module):
    """Waveform [batch, samples] -> log-mel power [batch, n_mels, frames] in dB.

    Frames = samples // hop_length + 1 (centred STFT). Each item is independent of the others
    in the batch (no per-batch statistics), which keeps ONNX and PyTorch outputs equal. ``level``
    and ``top_db``: see ``power_to_db``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        level: str = "absolute",
        top_db: float = 80.0,
    ):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        if f_max is not None and f_max > sample_rate / 2:
            raise ValueError(f"f_max ({f_max} Hz) is above Nyquist ({sample_rate / 2} Hz)")
        if n_mels > n_fft // 2 + 1:
            raise ValueError(f"n_mels ({n_mels}) exceeds the {n_fft // 2 + 1} STFT bins of n_fft={n_fft}")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.level, self.top_db = level, float(top_db)
        self.stft = torchaudio.transforms.Spectrogram(
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            power=None,  # complex; the power is taken below, faster than abs().pow(2)
            center=True,
            pad_mode="constant",  # reflect padding fails on windows shorter than n_fft / 2
        )
        self.mel = torchaudio.transforms.MelScale(
            n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max, n_stft=n_fft // 2 + 1
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[batch, samples] float -> [batch, n_mels, samples // hop_length + 1]."""
        # |X|^2 from the complex STFT's (real, imag) pairs read in place: the same products and
        # sum as .real.square() + .imag.square(), bit for bit, 1.7x faster (two strided copies fewer)
        spec = torch.view_as_real(self.stft(waveform))
        power = spec[..., 0] * spec[..., 0] + spec[..., 1] * spec[..., 1]
        return power_to_db(self.mel(power), self.level, self.top_db)

    def n_frames(self, n_samples: int) -> int:
        return n_samples // self.hop_length + 1


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to rebuild the front-end and to cut windows; stored with the features."""

    sample_rate: int
    window_samples: int
    window_hop_samples: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float | None
    # Defaults: what features and models written before features.level existed used.
    level: str = "absolute"
    top_db: float = 80.0

    @classmethod
    def resolve(cls, cfg: FeaturesConfig, sample_rate: int, window_s: float | None = None) -> FeatureSpec:
        """The spec for ``cfg`` at ``sample_rate``; ``window_s`` is the resolved window where
        ``cfg.window_s`` is auto (``resolve_window_s``)."""
        if window_s is None:
            if cfg.window_s == "auto":
                raise ValueError("features.window_s is auto: resolve it from the recordings (resolve_window_s)")
            window_s = float(cfg.window_s)
        win_length = max(1, round(cfg.win_ms * sample_rate / 1000))
        hop_length = max(1, round(cfg.hop_ms * sample_rate / 1000))
        window = max(1, round(window_s * sample_rate))
        hop_s = cfg.window_hop_s if cfg.window_hop_s is not None else window_s / 2
        n_fft = cfg.n_fft or resolve_n_fft(win_length, cfg.n_mels)
        if cfg.f_max is not None and cfg.f_max > sample_rate / 2:
            raise ValueError(
                f"features.f_max={cfg.f_max} Hz is above Nyquist for sample_rate={sample_rate} Hz"
            )
        return cls(
            sample_rate=sample_rate,
            window_samples=window,
            window_hop_samples=max(1, round(hop_s * sample_rate)),
            n_fft=n_fft,
            win_length=min(win_length, n_fft),
            hop_length=hop_length,
            n_mels=cfg.n_mels,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            level=cfg.level,
            top_db=float(cfg.top_db),
        )

    def front_end(self) -> LogMel:
        return LogMel(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
            level=self.level,
            top_db=self.top_db,
        )

    @property
    def floor_db(self) -> float:
        """The dB value of silence and of padding in these features."""
        return floor_db(self.level, self.top_db)

    @property
    def n_frames(self) -> int:
        return self.window_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- batches of windows

# Samples per front-end batch on a CPU: the STFT of a batch this size (complex, 257 bins a
# frame at 16 kHz) stays in the cache; bigger batches of long windows are up to 3x slower a
# window (docs/BENCHMARKS.md, "Stage costs"; featurize), smaller ones pay the per-call overhead.
CPU_BATCH_SAMPLES = 1 << 19


def length_batches(lengths: np.ndarray, spec: FeatureSpec, max_windows: int,
                   max_samples: float) -> Iterator[tuple[np.ndarray, int]]:
    """(row numbers, span): ``lengths``' windows in batches of similar length (sorted by it),
    each at most ``max_windows`` windows and ``max_samples`` samples; the span is the samples
    the batch's STFT needs, its longest signal plus half an FFT of context."""
    order = np.argsort(lengths, kind="stable")
    spans = np.minimum(spec.window_samples, lengths[order] + spec.n_fft // 2 + spec.hop_length)
    start = 0
    while start < len(order):
        end = start + 1  # ascending spans: a batch's last window is its longest
        while end < len(order) and end - start < max_windows and (end - start + 1) * spans[end] <= max_samples:
            end += 1
        yield order[start:end], int(spans[end - 1])
        start = end


def log_mel_windows(front: torch.nn.Module, spec: FeatureSpec, windows: list[tuple[np.ndarray, int]],
                    batch_size: int, device: torch.device) -> np.ndarray:
    """[len(windows), n_mels, n_frames] float32 log-mel of ``signal[start : start + window]`` each
    (zero-padded past the signal's end), in the given order.

    Frames that see only zero padding are exactly the floor value, so the STFT runs only over
    the longest real signal in a batch (plus half an FFT of context), and batches are made of
    windows of similar length: short recordings in long windows cost what their sound costs,
    not what the window costs. The result does not depend on how windows are batched
    (``test_features_do_not_depend_on_how_windows_are_batched``).
    """
    lengths = np.array([min(spec.window_samples, len(sig) - s) for sig, s in windows])
    out = np.empty((len(windows), spec.n_mels, spec.n_frames), dtype=np.float32)
    budget = CPU_BATCH_SAMPLES if device.type == "cpu" else math.inf
    for rows, span in length_batches(lengths, spec, batch_size, budget):
        batch = np.zeros((len(rows), span), dtype=np.float32)
        for j, r in enumerate(rows):
            sig, s = windows[r]
            piece = sig[s : s + min(span, lengths[r])]
            batch[j, : len(piece)] = piece
        with torch.inference_mode():
            head = front(torch.from_numpy(batch).to(device, non_blocking=True)).float().cpu().numpy()
        out[rows, :, : head.shape[2]] = head
        out[rows, :, head.shape[2] :] = spec.floor_db
    return out
