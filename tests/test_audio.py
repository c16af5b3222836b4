from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioflow import audio
from tests.conftest import tone, write_wav


def test_load_mixes_to_mono_and_resamples(tmp_path: Path):
    left = tone(440, 0.5, 8000)
    stereo = np.stack([left, -left * 0.0 + left], axis=1)
    p = write_wav(tmp_path / "s.wav", stereo, 8000)
    y = audio.load(p, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 8000) <= 2  # 0.5 s at 16 kHz
    # A resampled sine keeps its frequency: the spectral peak stays at 440 Hz.
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 5


def test_same_rate_is_passthrough(tmp_path: Path):
    x = tone(300, 0.2, 4000)
    p = write_wav(tmp_path / "a.wav", x, 4000, subtype="FLOAT")
    np.testing.assert_array_equal(audio.load(p, 4000), x)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00not really a wav" * 3), "unreadable or unsupported"),
    ],
)
def test_errors_name_file_and_reason(tmp_path: Path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(audio.AudioError) as e:
        audio.load(p, 8000)
    assert str(p) in str(e.value) and reason in str(e.value)


def test_non_finite_samples_rejected(tmp_path: Path):
    x = tone(300, 0.1, 8000)
    x[10] = np.nan
    p = write_wav(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="non-finite"):
        audio.read(p)


def test_zero_frames_rejected(tmp_path: Path):
    p = tmp_path / "zero.wav"
    sf.write(str(p), np.zeros((0,), dtype=np.float32), 8000)
    with pytest.raises(audio.AudioError, match="0 frames|unreadable"):
        audio.read(p)


def test_windows_cover_the_whole_signal():
    assert audio.window_starts(50, 100, 50) == [0]
    assert audio.window_starts(100, 100, 50) == [0]
    assert audio.window_starts(230, 100, 50) == [0, 50, 100, 130]  # last aligned to the end
    x = np.arange(230, dtype=np.float32)
    w = audio.frame_windows(x, 100, 50)
    assert w.shape == (4, 100)
    assert w[-1, -1] == 229
    short = audio.frame_windows(np.ones(30, dtype=np.float32), 100, 50)
    assert short.shape == (1, 100) and short[0, 29] == 1 and short[0, 30:].sum() == 0
    with pytest.raises(ValueError):
        audio.window_starts(10, 0, 5)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_mono_is_the_float32_mean_of_the_channels_bit_for_bit(channels: int, dtype) -> None:
    data = np.random.default_rng(channels).standard_normal((5000, channels)).astype(dtype)
    mono = audio.to_mono(data)
    assert mono.dtype == np.float32 and mono.shape == (5000,)
    np.testing.assert_array_equal(mono.view(np.uint32), data.mean(axis=1, dtype=np.float32).view(np.uint32))
