"""The one decoding seam: soundfile decode, mono mix, soxr resample, fixed-length windows.

Every recording is opened here, whether a local path or an object-store URL (``s3://...``,
see ``audioflow.storage``). Imports no torch, so the ONNX Runtime deployment path can use it too.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audioflow import storage
from audioflow.errors import AudioflowError


class AudioError(AudioflowError, ValueError):
    """A recording that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a recording, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def info(path: str | Path) -> AudioInfo:
    """Read the header; raise AudioError for a missing, empty or undecodable file."""
    if storage.is_url(path):
        return _remote_info(path)
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "file not found")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    try:
        i = sf.info(str(p))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(p, f"unreadable or unsupported format ({_short(exc)})") from exc
    return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def read(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode to float32 of shape [frames, channels] in [-1, 1] and the native rate."""
    if storage.is_url(path):
        # One request for the whole object: recordings are decoded whole anyway.
        return decode(fetch(path), path)
    else:
        p = Path(path)
        try:
            data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        except Exception as exc:
            info(p)  # names the cause (missing, empty, unreadable) in the same words as info()
            raise AudioError(p, f"unreadable or unsupported format ({_short(exc)})") from exc
    return _checked(data, sr, p)


def decode(blob: bytes, name: str) -> tuple[np.ndarray, int]:
    """``read`` for a recording held in memory (an object, an upload); ``name`` names it in errors."""
    if not blob:
        raise AudioError(name, "empty file (0 bytes)")
    try:
        data, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(name, f"unreadable or unsupported format ({_decode_error(exc, name)})") from exc
    return _checked(data, sr, name)


def info_of(blob: bytes, name: str) -> AudioInfo:
    """``info`` for a recording held in memory: the header only, nothing decoded."""
    if not blob:
        raise AudioError(name, "empty file (0 bytes)")
    try:
        i = sf.info(io.BytesIO(blob))
    except Exception as exc:
        raise AudioError(name, f"unreadable or unsupported format ({_decode_error(exc, name)})") from exc
    return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def _checked(data: np.ndarray, sr: int, p) -> tuple[np.ndarray, int]:
    if data.shape[0] == 0:
        raise AudioError(p, "no samples (0 frames)")
    if not np.isfinite(data).all():
        raise AudioError(p, "non-finite samples (NaN or Inf)")
    return data, int(sr)


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of [frames, channels] (or pass [frames] through): float32."""
    if data.ndim == 1:
        return data
    if data.shape[1] == 1:
        return data[:, 0].astype(np.float32, copy=False)
    if data.shape[1] == 2:  # bit for bit numpy's mean over the channels, 15-20x faster (no strided reduction)
        both = data.astype(np.float32, copy=False)
        return (both[:, 0] + both[:, 1]) / np.float32(2)
    return data.mean(axis=1, dtype=np.float32)


def resample(signal: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 signal with soxr (high quality); a no-op at equal rates."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(signal, dtype=np.float32)
    out = soxr.resample(signal.astype(np.float32, copy=False), orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def load(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode, mix to mono and resample: float32 [samples] at ``sample_rate``."""
    data, sr = read(path)
    return resample(to_mono(data), sr, sample_rate)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets that cover a signal with windows of ``window`` samples every ``hop``.

    A signal no longer than one window gives one window (padded later). A longer one gives
    windows every ``hop`` samples plus a last one aligned to its end, so no tail is dropped.
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] != n_samples - window:
        starts.append(n_samples - window)
    return starts


def frame_windows(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Cut a mono signal into [n_windows, window] float32; zero-pad one that is too short."""
    starts = window_starts(len(signal), window, hop)
    out = np.zeros((len(starts), window), dtype=np.float32)
    for i, s in enumerate(starts):
        piece = signal[s : s + window]
        out[i, : len(piece)] = piece
    return out


def fetch(url: str) -> bytes:
    """The bytes of an object; AudioError (naming the URL) when absent, empty or unreachable."""
    fs, path = storage.url_to_fs(url)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise AudioError(url, "file not found") from exc
    except Exception as exc:  # credentials, network, a "folder"
        raise AudioError(url, f"unreadable ({_short(exc)})") from exc
    if not data:
        raise AudioError(url, "empty file (0 bytes)")
    return data


def _remote_info(url: str) -> AudioInfo:
    # The header only: small ranged reads, not the whole object.
    fs, path = storage.url_to_fs(url)
    try:
        f = fs.open(path, "rb", block_size=1 << 16)
    except FileNotFoundError as exc:
        raise AudioError(url, "file not found") from exc
    except Exception as exc:
        raise AudioError(url, f"unreadable ({_short(exc)})") from exc
    with f:
        if getattr(f, "size", None) == 0:
            raise AudioError(url, "empty file (0 bytes)")
        try:
            i = sf.info(f)
        except Exception as exc:
            raise AudioError(url, f"unreadable or unsupported format ({_decode_error(exc, url)})") from exc
    return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def _decode_error(exc: Exception, name: str) -> str:
    # soundfile names a file object by its repr (a memory address); name the URL instead, in
    # the words it uses for a path, so reports read the same for local and remote data.
    if isinstance(exc, sf.LibsndfileError) and exc.prefix.startswith("Error opening"):
        return f"Error opening {name!r}: {exc.error_string}"
    return _short(exc)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


WAV_HEAD_BYTES = 1 << 16  # enough for the chunks before "data" in any ordinary WAV


def head_and_size(path: str | Path) -> tuple[bytes, int]:
    """The first ``WAV_HEAD_BYTES`` of a local file and its size: what ``wav_truncation`` reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, WAV_HEAD_BYTES, 0), os.fstat(fd).st_size
    finally:
        os.close(fd)


def wav_truncation(head: bytes, size: int) -> str:
    """Why a RIFF/WAVE file is cut short ("" when it is whole, or not a plain WAV).

    libsndfile quietly decodes the frames a truncated WAV still holds, so a cut-off upload
    reads as a shorter recording. The ``data`` chunk's declared size says how long it should
    be. Sizes 0 and 0xFFFFFFFF (streamed WAVs whose writer never knew the length) and RF64
    files (sizes in a ds64 chunk) are not judged.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return ""
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk, declared = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        if chunk == b"data":
            if declared in (0, 0xFFFFFFFF):
                return ""
            held = size - (pos + 8)
            if held >= declared:
                return ""
            if block_align:
                return (f"truncated: the WAV header promises {declared // block_align} frames, "
                        f"the file holds {max(held, 0) // block_align} ({held} of {declared} data bytes)")
            return f"truncated: the WAV header promises {declared} data bytes, the file holds {held}"
        pos += 8 + declared + (declared & 1)  # chunks are padded to an even size
    return ""
