"""The synthetic phonocardiogram demo dataset: layout, format, determinism, class content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

from audioflow import demo
from audioflow.demo import CLASSES, write_demo_dataset

SMALL = {"n_recordings": 12, "min_s": 1.0, "max_s": 2.0, "progress": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """One small dataset shared by the read-only tests."""
    out = tmp_path_factory.mktemp("demo")
    write_demo_dataset(out, seed=0, **SMALL)
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_manifest_layout(small: Path):
    m = pd.read_csv(small / "manifest.csv")
    assert list(m.columns) == ["path", "label", "patient"]
    assert len(m) == 12
    assert list(m.path) == sorted(m.path)
    assert set(m.label) == set(CLASSES)
    assert m.groupby("patient").label.nunique().max() == 1  # one condition per patient
    assert m.groupby("patient").size().min() >= 2  # several recordings per patient
    for path, label in zip(m.path, m.label):
        assert "\\" not in path and not path.startswith("/")
        assert path.startswith(f"recordings/{label}/")
        assert (small / path).is_file()
    assert sorted(str(p.relative_to(small)) for p in small.rglob("*.wav")) == list(m.path)


def test_returns_manifest_path(tmp_path: Path):
    assert write_demo_dataset(tmp_path, seed=3, **SMALL) == tmp_path / "manifest.csv"


def test_audio_format_and_duration(small: Path):
    for path in pd.read_csv(small / "manifest.csv").path:
        info = sf.info(str(small / path))
        assert info.samplerate == 4000
        assert info.channels == 1
        assert info.format == "WAV" and info.subtype == "PCM_16"
        assert 1.0 <= info.frames / info.samplerate <= 2.0


def test_levels_no_clipping_not_silent(small: Path):
    for path in pd.read_csv(small / "manifest.csv").path:
        x, _ = sf.read(str(small / path), dtype="float64")
        assert np.isfinite(x).all()
        assert np.max(np.abs(x)) < 0.95
        assert 20 * np.log10(np.sqrt(np.mean(x**2))) > -50.0


def test_same_seed_is_byte_identical(small: Path, tmp_path: Path):
    write_demo_dataset(tmp_path, seed=0, **SMALL)
    assert _hashes(tmp_path) == _hashes(small)


def test_other_seed_differs(small: Path, tmp_path: Path):
    write_demo_dataset(tmp_path, seed=1, **SMALL)
    a, b = _hashes(small), _hashes(tmp_path)
    shared = set(a) & set(b)
    assert not any(a[k] == b[k] for k in shared if k.endswith(".wav"))


def test_rerun_with_fewer_recordings_leaves_no_stale_files(tmp_path: Path):
    write_demo_dataset(tmp_path, seed=0, **SMALL)
    write_demo_dataset(tmp_path, seed=0, **{**SMALL, "n_recordings": 6})
    m = pd.read_csv(tmp_path / "manifest.csv")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.wav")) == list(m.path)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_recordings": 0}, {"seed": -1}, {"sample_rate": 1000}, {"min_s": 2.0, "max_s": 1.0}],
)
def test_bad_arguments_fail(tmp_path: Path, kwargs: dict):
    with pytest.raises(ValueError):
        write_demo_dataset(tmp_path, progress=False, **kwargs)


def _phase_energy(rec, sr: int) -> tuple[float, float]:
    """Mean 150-600 Hz power in mid-systole and early diastole, relative to late diastole.

    The windows skip S1/S2 themselves, so only murmur (or noise) is measured.
    """
    sos = signal.butter(4, [150, 600], btype="bandpass", fs=sr, output="sos")
    power = signal.sosfiltfilt(sos, rec.audio) ** 2
    n = power.size
    sys_m, dia_m, late_m = (np.zeros(n, bool) for _ in range(3))
    next_s1 = np.append(rec.s1[1:], n)
    for a, b, c in zip(rec.s1, rec.s2, next_s1):
        spans = [
            (sys_m, a + int(0.12 * sr), b - int(0.02 * sr)),
            (dia_m, b + int(0.10 * sr), b + int(0.10 * sr) + int(0.3 * (c - b))),
            (late_m, c - int(0.15 * (c - b)), c - int(0.02 * sr)),
        ]
        for mask, lo, hi in spans:
            mask[max(lo, 0) : max(min(hi, n), 0)] = True
    ref = power[late_m].mean()
    return power[sys_m].mean() / ref, power[dia_m].mean() / ref


def test_murmurs_sit_where_their_class_says():
    """Systolic murmurs add band energy in systole, diastolic ones in early diastole."""
    sr, seed = 4000, 0
    slots = demo._plan(60, seed)
    patients = {s.patient: demo._patient(seed, s.patient, s.label, sr) for s in slots}
    ratios: dict[str, list[tuple[float, float]]] = {c: [] for c in CLASSES}
    for slot in slots:
        rec = demo._render(seed, slot, patients[slot.patient], sr, 3.0, 4.0)
        ratios[slot.label].append(_phase_energy(rec, sr))
    med = {c: np.median(np.array(v), axis=0) for c, v in ratios.items()}
    sys_n, dia_n = med["normal"]
    assert med["systolic_murmur"][0] > 3 * sys_n  # ~5 dB or more above the normals
    assert med["diastolic_murmur"][1] > 3 * dia_n
    assert med["systolic_murmur"][1] < 2 * dia_n  # and not in the other phase
    assert med["diastolic_murmur"][0] < 2 * sys_n


def test_render_does_not_depend_on_order():
    """A recording's samples come from its own (seed, index) stream, not from earlier ones."""
    sr, seed = 4000, 5
    slots = demo._plan(9, seed)
    pts = {s.patient: demo._patient(seed, s.patient, s.label, sr) for s in slots}
    forward = [demo._render(seed, s, pts[s.patient], sr, 1.0, 2.0).audio for s in slots]
    backward = [demo._render(seed, s, pts[s.patient], sr, 1.0, 2.0).audio for s in reversed(slots)]
    for a, b in zip(forward, reversed(backward)):
        np.testing.assert_array_equal(a, b)
