"""The built-in demo dataset: deterministic synthetic phonocardiograms in three classes.

Each synthetic patient has one condition and several recordings that share the patient's
traits (heart rate, S1/S2 timbre, murmur character, chest filtering), so a split that
ignores patients leaks those traits. Every recording is rendered from its own RNG seeded
by (seed, index), so the output does not depend on iteration order, and the same
arguments give byte-identical files.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import fft, signal
from tqdm import tqdm

from audioflow.atomic import atomic_path

CLASSES: tuple[str, ...] = ("normal", "systolic_murmur", "diastolic_murmur")

# Separate RNG streams, so adding a draw to one part never shifts another.
_PLAN, _PATIENT, _RECORDING = 0, 1, 2
_PAD_S = 0.25  # rendered on both sides and cropped, so filters start settled
_TAKE_NAME = re.compile(r"p\d+_\d+\.wav")


@dataclass(frozen=True, eq=False)
class _Sound:
    """Timbre of one heart sound (S1 or S2): a few damped low-frequency sinusoids."""

    freqs: np.ndarray  # Hz, one per component
    delays: np.ndarray  # s, component onsets (M1/T1, A2/P2 splitting)
    decays: np.ndarray  # s, exponential decay time constants
    weights: np.ndarray
    duration: float  # s


@dataclass(frozen=True, eq=False)
class _Patient:
    """Traits drawn once per patient and shared by all of their recordings."""

    label: str
    heart_rate: float  # beats per minute
    systole_frac: float  # S2 onset as a fraction of the cycle
    s1: _Sound
    s2: _Sound
    s2_ratio: float  # S2 peak relative to S1 peak
    murmur_ratio: float  # murmur RMS at its envelope peak relative to the S1 peak
    murmur_shape: str  # diamond | plateau | decrescendo
    murmur_peak: float  # where a diamond peaks, as a fraction of the murmur
    murmur_band: tuple[float, float]  # Hz
    murmur_onset: float  # s after S1 (systolic) or S2 (diastolic)
    murmur_extent: float  # diastolic: fraction of the diastole covered
    murmur_gamma: float  # decrescendo curvature
    chest_mix: float  # how much of the low-passed signal replaces the dry one
    murmur_sos: np.ndarray  # band-pass for murmur_band, designed once per patient
    chest_sos: np.ndarray  # the chest wall's low-pass


@dataclass(frozen=True)
class _Slot:
    """One recording of the plan: its global index, patient, take number and label."""

    index: int
    patient: int
    take: int
    label: str


@dataclass(frozen=True, eq=False)
class _Rendered:
    """A rendered recording and its ground-truth S1/S2 onsets (samples, may lie outside)."""

    audio: np.ndarray
    s1: np.ndarray
    s2: np.ndarray


def write_demo_dataset(
    out_dir: str | Path,
    n_recordings: int = 300,
    seed: int = 0,
    sample_rate: int = 4000,
    min_s: float = 3.0,
    max_s: float = 6.0,
    progress: bool = True,
) -> Path:
    """Write WAV files + manifest.csv into out_dir; return the manifest path.

    Layout: out_dir/recordings/<label>/<patient>_<take>.wav (4 kHz mono PCM_16 by default)
    and out_dir/manifest.csv with columns path,label,patient, sorted by path.
    """
    _check_args(n_recordings, seed, sample_rate, min_s, max_s)
    out = Path(out_dir)
    slots = _plan(n_recordings, seed)
    width = max(3, len(str(max(s.patient for s in slots))))
    pairs = sorted({(s.patient, s.label) for s in slots})
    patients = {p: _patient(seed, p, lab, sample_rate) for p, lab in pairs}

    rows = []
    for slot in tqdm(slots, desc="demo dataset", unit="rec", disable=not progress):
        rel = f"recordings/{slot.label}/p{slot.patient:0{width}d}_{slot.take}.wav"
        rec = _render(seed, slot, patients[slot.patient], sample_rate, min_s, max_s)
        _write_wav(out / rel, rec.audio, sample_rate)
        rows.append((rel, slot.label, f"p{slot.patient:0{width}d}"))

    _remove_stale(out / "recordings", {r[0] for r in rows})
    manifest = pd.DataFrame(rows, columns=["path", "label", "patient"]).sort_values("path")
    return _write_manifest(manifest, out / "manifest.csv")


def _check_args(n: int, seed: int, sr: int, min_s: float, max_s: float) -> None:
    """Fail early with a message naming the bad argument."""
    if n < 1:
        raise ValueError(f"n_recordings must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if sr < 1600:  # the murmur band reaches 600 Hz and needs room below Nyquist
        raise ValueError(f"sample_rate must be >= 1600 Hz, got {sr}")
    if not 0 < min_s <= max_s:
        raise ValueError(f"need 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")


def _plan(n: int, seed: int) -> list[_Slot]:
    """Assign recordings to patients (~4.5 each) and patients to classes (a third each)."""
    rng = np.random.default_rng([seed, _PLAN])
    n_patients = max(min(3, n), round(n / 4.5))  # small n still gets all three classes
    labels = [CLASSES[p % len(CLASSES)] for p in range(n_patients)]
    labels = [labels[i] for i in rng.permutation(n_patients)]  # ids must not predict labels
    # Everyone gets one recording; the rest is shared in proportion to random weights.
    weights = rng.uniform(3.0, 6.0, n_patients)
    share = (n - n_patients) * weights / weights.sum()
    counts = 1 + np.floor(share).astype(int)
    leftover = n - counts.sum()
    counts[np.argsort(-(share - np.floor(share)), kind="stable")[:leftover]] += 1
    slots, index = [], 0
    for p, count in enumerate(counts):
        for take in range(1, count + 1):
            slots.append(_Slot(index, p, take, labels[p]))
            index += 1
    return slots


def _sound(
    rng: np.random.Generator,
    n: int,
    f_lo: float,
    f_hi: float,
    dur: tuple[float, float],
    split: float,
) -> _Sound:
    """Draw the timbre of one heart sound."""
    duration = rng.uniform(*dur)
    delays = np.concatenate([[0.0], rng.uniform(0.0, split, n - 1)])
    return _Sound(
        freqs=rng.uniform(f_lo, f_hi, n),
        delays=delays,
        decays=(duration - delays) / rng.uniform(3.0, 4.5, n),  # ~silent by the end
        weights=np.concatenate([[1.0], rng.uniform(0.3, 0.9, n - 1)]),
        duration=duration,
    )


def _patient(seed: int, p: int, label: str, sr: int) -> _Patient:
    """Draw the traits of patient p from its own RNG stream."""
    rng = np.random.default_rng([seed, _PATIENT, p])
    lo = rng.uniform(100.0, 220.0)
    band = (lo, min(rng.uniform(max(lo + 150.0, 300.0), 600.0), 0.45 * sr))
    cutoff = min(rng.uniform(300.0, 900.0), 0.45 * sr)
    return _Patient(
        label=label,
        heart_rate=rng.uniform(55.0, 110.0),
        systole_frac=rng.uniform(0.30, 0.40),
        s1=_sound(rng, 3, 30.0, 110.0, (0.08, 0.12), 0.03),  # S1: longer and lower
        s2=_sound(rng, 2, 50.0, 150.0, (0.06, 0.10), 0.04),
        s2_ratio=rng.uniform(0.5, 1.1),
        murmur_ratio=_murmur_ratio(rng, label),
        murmur_shape=str(rng.choice(["diamond", "plateau", "decrescendo"])),
        murmur_peak=rng.uniform(0.3, 0.5),
        murmur_band=band,
        murmur_onset=rng.uniform(0.02, 0.05),
        murmur_extent=rng.uniform(0.4, 0.7),
        murmur_gamma=rng.uniform(0.7, 2.0),
        chest_mix=rng.uniform(0.2, 0.7),
        murmur_sos=signal.butter(4, band, btype="bandpass", fs=sr, output="sos"),
        chest_sos=signal.butter(2, cutoff, fs=sr, output="sos"),
    )


def _murmur_ratio(rng: np.random.Generator, label: str) -> float:
    """Murmur loudness: 0.15-0.6 of S1; normals sometimes get a faint innocent murmur."""
    ratio = rng.uniform(0.15, 0.6)
    innocent = rng.uniform(0.01, 0.04)
    if label != "normal":
        return ratio
    return innocent if rng.uniform() < 0.3 else 0.0


def _render(seed: int, slot: _Slot, pt: _Patient, sr: int, min_s: float, max_s: float) -> _Rendered:
    """Render one recording: heart sounds + murmur, chest filter, noise, artefact, gain."""
    rng = np.random.default_rng([seed, _RECORDING, slot.index])
    n = int(
        np.clip(round(rng.uniform(min_s, max_s) * sr), np.ceil(min_s * sr), np.floor(max_s * sr))
    )
    pad = int(_PAD_S * sr)
    total = n + 2 * pad
    s1, s2 = _beats(rng, pt, total, sr)
    heart = _heart_sounds(rng, pt, s1, s2, total, sr)
    if pt.murmur_ratio > 0:
        env = _murmur_envelope(rng, pt, s1, s2, total, sr)
        gain = pt.murmur_ratio * rng.uniform(0.8, 1.2)  # auscultation site varies
        heart += gain * env * _band_noise(rng, pt.murmur_sos, total)
    x = pt.chest_mix * signal.sosfilt(pt.chest_sos, heart) + (1 - pt.chest_mix) * heart
    x += 10 ** (-rng.uniform(12.0, 35.0) / 20) * _background(rng, total, sr)  # SNR re S1 peak
    x += _artefacts(rng, total, sr)
    x = x[pad : pad + n]
    peak = np.max(np.abs(x))
    x *= 10 ** (rng.uniform(-20.0, -3.0) / 20) / peak  # random gain, never above -3 dBFS
    return _Rendered(x, s1 - pad, s2 - pad)


def _beats(
    rng: np.random.Generator, pt: _Patient, total: int, sr: int
) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 onsets (samples) with recording-level rate change and beat-level jitter."""
    rr = 60.0 / (pt.heart_rate * rng.uniform(0.92, 1.08))
    count = int(np.ceil(total / sr / (0.85 * rr))) + 2
    intervals = rr * np.clip(1 + 0.03 * rng.standard_normal(count), 0.9, 1.1)
    onsets = -rng.uniform(0.0, rr) + np.concatenate([[0.0], np.cumsum(intervals[:-1])])
    frac = np.clip(pt.systole_frac + 0.01 * rng.standard_normal(count), 0.27, 0.43)
    s1 = np.round(onsets * sr).astype(np.int64)
    s2 = np.round((onsets + frac * intervals) * sr).astype(np.int64)
    keep = s1 < total
    return s1[keep], s2[keep]


def _burst(rng: np.random.Generator, snd: _Sound, sr: int) -> np.ndarray:
    """One heart sound with fresh phases and slightly detuned components; peak 1."""
    t = np.arange(int(snd.duration * sr))[:, None] / sr - snd.delays
    freqs = snd.freqs * rng.uniform(0.95, 1.05, snd.freqs.size)
    phases = rng.uniform(0.0, 2 * np.pi, snd.freqs.size)
    tp = np.maximum(t, 0.0)
    env = (t >= 0) * (1 - np.exp(-tp / 0.004)) * np.exp(-tp / snd.decays)  # 4 ms attack
    x = (snd.weights * env * np.sin(2 * np.pi * freqs * tp + phases)).sum(axis=1)
    x *= np.hanning(2 * x.size)[x.size :] ** 0.5  # taper the tail to exactly zero
    return x / np.max(np.abs(x))


def _heart_sounds(
    rng: np.random.Generator, pt: _Patient, s1: np.ndarray, s2: np.ndarray, total: int, sr: int
) -> np.ndarray:
    """Place S1 (peak ~1) and S2 (peak ~s2_ratio) bursts at their onsets."""
    x = np.zeros(total)
    s2_level = pt.s2_ratio * rng.uniform(0.85, 1.15)  # the site changes the S1/S2 balance
    for a, b in zip(s1, s2):
        _add(x, int(a), rng.uniform(0.85, 1.15) * _burst(rng, pt.s1, sr))
        _add(x, int(b), s2_level * rng.uniform(0.85, 1.15) * _burst(rng, pt.s2, sr))
    return x


def _add(x: np.ndarray, start: int, y: np.ndarray) -> None:
    """x[start:start+len(y)] += y, dropping whatever falls outside x."""
    lo, hi = max(start, 0), min(start + y.size, x.size)
    if lo < hi:
        x[lo:hi] += y[lo - start : hi - start]


def _murmur_envelope(
    rng: np.random.Generator, pt: _Patient, s1: np.ndarray, s2: np.ndarray, total: int, sr: int
) -> np.ndarray:
    """Per-sample murmur amplitude: systolic between S1 and S2, diastolic after S2."""
    env = np.zeros(total)
    next_s1 = np.append(s1[1:], s1[-1] + (s1[-1] - s1[-2] if s1.size > 1 else sr))
    for a, b, c in zip(s1, s2, next_s1):
        jitter = rng.uniform(0.9, 1.1)
        if pt.label == "diastolic_murmur":
            start = b + int(pt.murmur_onset * sr)
            length = int(pt.murmur_extent * (c - start))
            shape = _decrescendo(length, pt.murmur_gamma, sr)
        else:  # systolic murmurs and the faint innocent murmur of some normals
            start = a + int((pt.murmur_onset + 0.02) * sr)
            length = b - int(rng.uniform(0.01, 0.03) * sr) - start
            shape = _systolic_shape(pt, length, sr)
        if length > 0:
            _add(env, int(start), jitter * shape)
    return env


def _systolic_shape(pt: _Patient, n: int, sr: int) -> np.ndarray:
    """Diamond (crescendo-decrescendo), holosystolic plateau, or decrescendo."""
    if n <= 0:
        return np.zeros(0)
    u = np.linspace(0.0, 1.0, n)
    if pt.murmur_shape == "diamond" or pt.label == "normal":  # innocent murmurs are ejection-type
        p = pt.murmur_peak
        return np.minimum(u / p, (1 - u) / (1 - p))
    if pt.murmur_shape == "plateau":
        return _ramps(np.ones(n), sr)
    return _decrescendo(n, pt.murmur_gamma, sr)


def _decrescendo(n: int, gamma: float, sr: int) -> np.ndarray:
    """Loudest at the start, fading to zero; short ramps avoid clicks."""
    if n <= 0:
        return np.zeros(0)
    return _ramps((1 - np.linspace(0.0, 1.0, n)) ** gamma, sr)


def _ramps(x: np.ndarray, sr: int, ramp_s: float = 0.015) -> np.ndarray:
    """Raised-cosine fade in and out over ramp_s (or a third of x when shorter)."""
    k = min(int(ramp_s * sr), x.size // 3)
    if k > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        x = x.copy()
        x[:k] *= r
        x[x.size - k :] *= r[::-1]
    return x


def _band_noise(rng: np.random.Generator, sos: np.ndarray, n: int) -> np.ndarray:
    """Unit-RMS white noise through the band-pass sos."""
    x = signal.sosfilt(sos, rng.standard_normal(n))
    return x / np.sqrt(np.mean(x**2))


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS mix of white, pink and brown noise, with no energy below 10 Hz."""
    m = fft.next_fast_len(n, real=True)  # a prime length would make the FFT slow
    spectrum = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / sr)
    f_safe = np.maximum(f, 10.0)
    weights = rng.dirichlet([1.0, 1.0, 1.0])
    x = np.zeros(n)
    for w, slope in zip(weights, (0.0, 0.5, 1.0)):  # amplitude ~ f^-slope
        c = np.fft.irfft(spectrum * (f >= 10.0) * f_safe**-slope, m)[:n]
        x += np.sqrt(w) * c / np.sqrt(np.mean(c**2))
    return x / np.sqrt(np.mean(x**2))


def _artefacts(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Occasional (~20%) low-frequency movement bumps, 0.3-1x the S1 peak."""
    x = np.zeros(n)
    if rng.uniform() >= 0.2:
        return x
    for _ in range(rng.integers(1, 3)):
        m = int(rng.uniform(0.1, 0.5) * sr)
        t = np.arange(m) / sr
        bump = np.hanning(m) * np.sin(
            2 * np.pi * rng.uniform(2.0, 12.0) * t + rng.uniform(0, 2 * np.pi)
        )
        _add(
            x,
            int(rng.integers(0, max(n - m, 1))),
            rng.uniform(0.3, 1.0) * bump / np.max(np.abs(bump)),
        )
    return x


def _remove_stale(rec_dir: Path, keep: set[str]) -> None:
    """Delete demo takes left by an earlier, larger run, so folder discovery sees no extras."""
    for label in CLASSES:
        folder = rec_dir / label
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            rel = f"recordings/{label}/{f.name}"
            if _TAKE_NAME.fullmatch(f.name) and rel not in keep:
                f.unlink()


def _write_wav(dest: Path, audio: np.ndarray, sr: int) -> None:
    """Encode in memory, then write: soundfile's own close() syncs to disk, which is slow."""
    buf = io.BytesIO()
    sf.write(buf, audio, sr, subtype="PCM_16", format="WAV")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buf.getvalue())


def _write_manifest(manifest: pd.DataFrame, path: Path) -> Path:
    """Write the CSV via a temp file, so a reader never sees half a manifest."""
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False, lineterminator="\n")
    return path
