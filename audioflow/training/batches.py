"""Sources of training batches: ``WaveformBatches`` cuts each window afresh from the decoded
audio, augments the waveform and runs the front-end; ``FeatureBatches`` reads the stored log-mel
windows. Both keep their source in GPU memory when training runs there and it fits."""

from __future__ import annotations

import math

import numpy as np
import torch

from audioflow.features import Features
from audioflow.training.device import fits_on, to_device

__all__ = ["FeatureBatches", "WaveformBatches", "fits_on"]


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

