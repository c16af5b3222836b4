from pathlib import Path

import numpy as np
import pytest
import torch

from audioflow.config import DataConfig, FeaturesConfig, load_params
from audioflow.features import LOG_FLOOR, Features, FeatureSpec, LogMel, featurize
from audioflow.manifest import ingest
from tests.conftest import tone, write_wav


def test_logmel_shape_and_batch_independence():
    lm = LogMel(sample_rate=8000, n_fft=512, win_length=200, hop_length=80, n_mels=32)
    x = torch.randn(3, 8000)
    y = lm(x)
    assert y.shape == (3, 32, 8000 // 80 + 1) == (3, 32, lm.n_frames(8000))
    # An item's features do not depend on what else is in the batch.
    torch.testing.assert_close(lm(x[:1]), y[:1])
    # Silence hits the floor instead of -inf.
    assert torch.isfinite(lm(torch.zeros(1, 800))).all()


def test_logmel_peak_in_right_band():
    lm = LogMel(sample_rate=8000, n_fft=512, win_length=200, hop_length=80, n_mels=40)
    low = lm(torch.from_numpy(tone(200, 1, 8000))[None])[0].mean(1)
    high = lm(torch.from_numpy(tone(3000, 1, 8000))[None])[0].mean(1)
    assert low.argmax() < high.argmax()


def test_peak_level_ignores_the_recording_gain_and_keeps_silence_at_the_floor():
    kw = dict(sample_rate=8000, n_fft=512, win_length=200, hop_length=80, n_mels=32)
    peak, absolute = LogMel(**kw, level="peak", top_db=70), LogMel(**kw)
    x = torch.from_numpy(tone(440, 0.5, 8000, amp=0.5))[None]
    x = x + 0.001 * torch.randn(1, x.shape[1], generator=torch.Generator().manual_seed(0))
    quiet = x * 10 ** (-30 / 20)  # the same sound 30 dB quieter: a far microphone, a low gain
    # Re full scale the quiet copy is 30 dB down everywhere above the floor; re its peak it is the same.
    above = absolute(x) > -30
    torch.testing.assert_close(absolute(x)[above] - absolute(quiet)[above], torch.full_like(absolute(x)[above], 30.0),
                               atol=1e-2, rtol=0)
    torch.testing.assert_close(peak(quiet), peak(x), atol=1e-3, rtol=0)
    y = peak(x)
    assert y.max().item() == pytest.approx(0.0, abs=1e-5) and y.min().item() >= -70.0
    # Zero padding and digital silence sit at -top_db, as featurize writes them; a window whose
    # loudest cell is below LOG_FLOOR is not raised to 0 dB (hiss does not become a loud sound).
    assert torch.equal(peak(torch.zeros(2, 800)), torch.full((2, 32, 11), -70.0))
    hiss = 1e-6 * torch.randn(1, 800, generator=torch.Generator().manual_seed(1))
    assert peak.mel(peak.stft(hiss).abs().square()).max().item() < LOG_FLOOR
    assert peak(hiss).max().item() < -20.0
    # Each item is referred to its own peak, whatever else is in the batch.
    torch.testing.assert_close(peak(torch.cat([x, quiet * 0.01])), torch.cat([peak(x), peak(quiet * 0.01)]))
    with pytest.raises(ValueError, match="level must be one of"):
        LogMel(**kw, level="rms")


def test_peak_level_is_the_default_and_recorded_in_the_spec():
    cfg = FeaturesConfig(window_s=1.0)
    spec = FeatureSpec.resolve(cfg, 8000)
    assert (spec.level, spec.top_db, spec.floor_db) == ("peak", 50.0, -50.0)
    assert spec.front_end().level == "peak"
    old = FeatureSpec(**{k: v for k, v in spec.to_dict().items() if k not in ("level", "top_db")})
    assert (old.level, old.floor_db) == ("absolute", pytest.approx(10 * np.log10(LOG_FLOOR)))  # earlier models
    with pytest.raises(ValueError):
        FeaturesConfig(level="loudest")


@pytest.mark.parametrize("kw", [dict(win_length=600, n_fft=512), dict(f_max=5000), dict(n_mels=400)])
def test_logmel_impossible_combinations(kw):
    base = dict(sample_rate=8000, n_fft=512, win_length=200, hop_length=80, n_mels=32)
    with pytest.raises(ValueError):
        LogMel(**(base | kw))


def test_spec_resolution_in_time_units():
    s = FeatureSpec.resolve(FeaturesConfig(window_s=2.0, win_ms=25, hop_ms=10, n_mels=64), 4000)
    assert (s.win_length, s.hop_length, s.window_samples, s.window_hop_samples) == (100, 40, 8000, 4000)
    assert s.n_fft == 512 and s.n_frames == 201
    with pytest.raises(ValueError, match="Nyquist"):
        FeatureSpec.resolve(FeaturesConfig(f_max=3000), 4000, 1.0)


def test_featurize_windows_memmap_and_index(tmp_path: Path):
    root = tmp_path / "d"
    write_wav(root / "a/long.wav", tone(300, 2.3, 8000), 8000)  # several windows
    write_wav(root / "a/short.wav", tone(300, 0.3, 8000), 8000)  # padded
    write_wav(root / "b/other_rate.wav", tone(900, 1.0, 16000), 16000)  # resampled
    ds = ingest(DataConfig(root=str(root), manifest=None), progress=False)
    cfg = FeaturesConfig(sample_rate="auto", window_s=1.0, n_mels=32, batch_size=2)
    f = featurize(ds, cfg, tmp_path / "feat", progress=False)
    assert f.spec.sample_rate == 8000  # two of three files are 8 kHz
    arr = f.array
    assert isinstance(arr, np.memmap) and arr.shape == (len(f.index), 32, f.spec.n_frames)
    per_file = f.index.groupby("path").size().to_dict()
    assert per_file == {"a/long.wav": 4, "a/short.wav": 1, "b/other_rate.wav": 1}
    assert np.isfinite(arr).all()
    # Stored rows equal the front-end applied to the same window, computed directly.
    from audioflow import audio

    # (featurize skips the STFT over pure padding; the result must not change.)
    for rel in per_file:
        sig = audio.load(root / rel, 8000)
        win = audio.frame_windows(sig, f.spec.window_samples, f.spec.window_hop_samples)
        direct = f.spec.front_end()(torch.from_numpy(win)).numpy()
        rows = f.index.loc[f.index.path == rel, "row"].to_numpy()
        np.testing.assert_allclose(arr[rows], direct, atol=1e-4, err_msg=rel)
    again = Features.load(tmp_path / "feat")
    assert again.spec == f.spec and again.labels == ["a", "b"]
    # The decoded recordings are stored beside the features (for waveform augmentation), each
    # window pointing at its recording: float16 of what featurize decoded.
    store = f.audio
    assert store.dtype == np.float16 and len(store) == sum(len(audio.load(root / r, 8000)) for r in per_file)
    for rel in per_file:
        row = f.index.loc[f.index.path == rel].iloc[0]
        sig = audio.load(root / rel, 8000)
        assert row.audio_length == len(sig)
        np.testing.assert_allclose(store[row.audio_offset : row.audio_offset + row.audio_length], sig,
                                   rtol=2**-10, atol=1e-7, err_msg=rel)


def test_features_do_not_depend_on_how_windows_are_batched(tmp_path: Path):
    """Windows are batched by length (the STFT runs only over a batch's longest signal): any
    batch size gives the same bytes, in the files' order."""
    root = tmp_path / "d"
    for k, seconds in enumerate((0.05, 2.3, 0.4, 1.0, 0.12, 0.9, 3.1, 0.6, 0.3)):
        write_wav(root / "ab"[k % 2] / f"{k}.wav", tone(200 + 90 * k, seconds, 8000, seed=k), 8000)
    ds = ingest(DataConfig(root=str(root), manifest=None), progress=False)
    stores = {}
    for batch in (1, 3, 64):
        cfg = FeaturesConfig(sample_rate=8000, window_s=1.0, n_mels=32, batch_size=batch)
        f = featurize(ds, cfg, tmp_path / f"b{batch}", progress=False)
        stores[batch] = (tmp_path / f"b{batch}" / "features.npy").read_bytes()
        assert f.index["path"].tolist() == sorted(f.index["path"], key=lambda p: ds.files["path"].tolist().index(p))
    assert stores[1] == stores[3] == stores[64]


def test_featurize_fails_loudly_on_a_bad_file(tmp_path: Path):
    root = tmp_path / "d"
    write_wav(root / "a/ok.wav", tone(300, 0.5, 8000), 8000)
    (root / "b").mkdir(parents=True)
    (root / "b/broken.wav").write_bytes(b"garbage" * 10)
    ds = ingest(DataConfig(root=str(root), manifest=None), progress=False)
    with pytest.raises(Exception, match="broken.wav"):
        featurize(ds, FeaturesConfig(sample_rate=8000, window_s=0.5, n_mels=32), tmp_path / "f", progress=False)


def _small_features(tmp_path: Path):
    from audioflow import stages
    from audioflow.config import load_params

    root = tmp_path / "d"
    for k in range(3):
        write_wav(root / "a" / f"{k}.wav", tone(300 + 50 * k, 0.4, 8000, seed=k), 8000)
        write_wav(root / "b" / f"{k}.wav", tone(900 + 50 * k, 0.4, 8000, seed=10 + k), 8000)
    params = load_params(tmp_path / "absent.yaml", {"data.root": str(root), "data.manifest": None,
                                                    "features.window_s": 0.25, "features.n_mels": 16,
                                                    "validate.min_per_class": 3})
    stages.ingest(params, tmp_path / "ingest", progress=False)
    stages.validate(params, tmp_path / "ingest", tmp_path / "validate", progress=False)
    return params


def test_features_load_refuses_files_that_disagree(tmp_path: Path):
    from audioflow import stages
    from audioflow.features import FeaturesError

    params = _small_features(tmp_path)
    out = tmp_path / "features"
    f = stages.featurize(params, tmp_path / "ingest", tmp_path / "validate", out, progress=False)
    n = len(f.index)
    # A crash mid-write: the .npy holds fewer rows than its header, or than index.csv lists.
    good = (out / "features.npy").read_bytes()
    (out / "features.npy").write_bytes(good[: len(good) - 100])
    with pytest.raises(FeaturesError, match="features.npy"):
        Features.load(out)
    (out / "features.npy").write_bytes(good)
    samples = (out / "audio.npy").read_bytes()
    (out / "audio.npy").write_bytes(samples[: len(samples) - 10])
    with pytest.raises(FeaturesError, match="audio.npy"):
        Features.load(out)
    (out / "audio.npy").write_bytes(samples)
    index = (out / "index.csv").read_text()
    (out / "index.csv").write_text(index + index.splitlines()[-1] + "\n")
    with pytest.raises(FeaturesError, match=rf"index.csv {n + 1} rows"):
        Features.load(out)
    (out / "index.csv").unlink()
    with pytest.raises(FeaturesError, match="missing index.csv"):
        Features.load(out)


def test_crashed_featurize_keeps_the_previous_features(tmp_path: Path, monkeypatch):
    from audioflow import audio, stages

    params = _small_features(tmp_path)
    out = tmp_path / "features"
    stages.featurize(params, tmp_path / "ingest", tmp_path / "validate", out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = audio.load, {"n": 0}

    def dies_on_the_fourth_file(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    monkeypatch.setattr(audio, "load", dies_on_the_fourth_file)
    changed = params.model_copy(update={"features": params.features.model_copy(update={"n_mels": 8})})
    with pytest.raises(RuntimeError, match="simulated crash"):
        stages.featurize(changed, tmp_path / "ingest", tmp_path / "validate", out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "features", "ingest", "validate"]  # no partial folder
    assert Features.load(out).spec.n_mels == 16


@pytest.mark.parametrize("n_shards", [2, 3, 7])
def test_sharded_featurize_merges_to_the_same_bytes(tmp_path: Path, n_shards: int):
    from audioflow import stages

    root = tmp_path / "d"
    for k in range(5):  # uneven lengths: some files give several windows, batches straddle shards
        write_wav(root / "a" / f"{k}.wav", tone(300 + 40 * k, 0.2 + 0.3 * k, 8000, seed=k), 8000)
        write_wav(root / "b" / f"{k}.wav", tone(900 + 40 * k, 1.4 - 0.25 * k, 8000, seed=9 + k), 8000)
    params = load_params(tmp_path / "absent.yaml", {
        "data.root": str(root), "data.manifest": None, "features.window_s": 0.5,
        "features.n_mels": 16, "features.batch_size": 3})
    stages.ingest(params, tmp_path / "ingest", progress=False)
    ingested, validated = tmp_path / "ingest", tmp_path / "validate"
    stages.validate(params, ingested, validated, progress=False)
    whole = stages.featurize(params, ingested, validated, tmp_path / "whole", progress=False)
    parts = [tmp_path / f"part{i}" for i in range(n_shards)]
    for i, part in enumerate(parts):
        stages.featurize(params, ingested, validated, part, progress=False, shard=(i, n_shards))
    assert sum(len(Features.load(p).index) for p in parts) == len(whole.index)
    stages.merge_features(params, parts, tmp_path / "merged")
    for name in ("features.npy", "audio.npy", "index.csv", "features.json", "params.json"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_merge_refuses_shards_of_different_runs(tmp_path: Path):
    from audioflow import stages
    from audioflow.features import FeaturesError

    params = _small_features(tmp_path)
    ingested, validated = tmp_path / "ingest", tmp_path / "validate"
    stages.featurize(params, ingested, validated, tmp_path / "p0", progress=False, shard=(0, 2))
    other = params.model_copy(update={"features": params.features.model_copy(update={"n_mels": 8})})
    stages.featurize(other, ingested, validated, tmp_path / "p1", progress=False, shard=(1, 2))
    with pytest.raises(FeaturesError, match="disagree on spec"):
        stages.merge_features(params, [tmp_path / "p0", tmp_path / "p1"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("durations", "window"), [
    ([0.3, 0.4, 0.42, 0.5, 0.6, 0.61, 0.45, 0.38, 0.52, 2.3], 1.0),  # spoken digits: one long outlier
    ([1.0] * 50, 1.0),  # keyword clips
    ([5.0] * 40, 5.0),  # ESC-50
    ([4.0] * 30 + [1.2, 2.5, 3.3], 5.0),  # UrbanSound8K
    ([12.0, 30.0, 60.0, 8.0, 20.0], 5.0),  # heart sounds: cut into 5-s windows
    ([0.1, 0.15, 0.2, 0.12], 0.25),  # drum hits
    ([0.3] * 9 + [40.0], 0.5),  # 90 % held whole; the long one gives several windows
])
def test_auto_window_fits_the_collection(durations, window):
    from audioflow.features import auto_window_s

    assert auto_window_s(durations) == window


def test_auto_window_is_resolved_and_recorded(tone_dataset, tmp_path):
    from audioflow.config import DataConfig
    from audioflow.features import resolve_window_s
    from audioflow.manifest import ingest

    ds = ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False)
    assert FeaturesConfig().window_s == "auto"
    feats = featurize(ds, FeaturesConfig(n_mels=32), tmp_path / "f", progress=False)
    chosen = resolve_window_s(FeaturesConfig(), ds)
    assert feats.spec.window_samples == round(chosen * feats.spec.sample_rate)  # in the spec the model carries
    with pytest.raises(ValueError, match="auto: resolve it"):
        FeatureSpec.resolve(FeaturesConfig(), 4000)


def test_auto_settings_come_from_validations_facts_without_reading_headers_again(tone_dataset, tmp_path,
                                                                                  monkeypatch):
    """featurize resolves sample_rate and window_s: auto from the rates and durations validation
    measured (facts.csv), and reads the headers itself only where that table misses a recording."""
    import pandas as pd

    from audioflow import audio
    from audioflow.config import DataConfig
    from audioflow.features import resolve_spec
    from audioflow.manifest import ingest

    ds = ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False)
    read = resolve_spec(FeaturesConfig(), ds)
    facts = pd.DataFrame({"path": ds.files["path"], "sample_rate": read.sample_rate,
                          "duration_s": [audio.info(ds.location(p)).duration_s for p in ds.files["path"]]})
    opened = []
    monkeypatch.setattr(audio, "info", lambda path, real=audio.info: opened.append(path) or real(path))
    assert resolve_spec(FeaturesConfig(), ds, facts) == read and opened == []
    # the table is what counts: a collection measured at 22.05 kHz, 10 s long, gets that spec
    other = facts.assign(sample_rate=22050, duration_s=10.0)
    spec = resolve_spec(FeaturesConfig(), ds, other)
    assert (spec.sample_rate, spec.window_samples) == (22050, 5 * 22050) and opened == []
    assert resolve_spec(FeaturesConfig(), ds, facts.iloc[1:]) == read and len(opened) == len(ds.files)


def test_scratch_compiler_cache_never_removes_headers_another_run_is_using(tmp_path: Path, monkeypatch):
    """torch.compile's precompiled headers live in $TMPDIR/torchinductor_<user>, shared by every
    process: a block that does not compile leaves them to the run that made them (removing them
    broke a concurrent compile: "precompiled_headers/....h: No such file or directory")."""
    import getpass
    import shutil
    import tempfile

    from audioflow.features import scratch_compiler_cache

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    default = tmp_path / f"torchinductor_{getpass.getuser()}"
    header = default / "precompiled_headers" / "h.gch"
    with scratch_compiler_cache():
        header.parent.mkdir(parents=True)  # another process compiles meanwhile
        header.write_bytes(b"pch")
    assert header.read_bytes() == b"pch"
    shutil.rmtree(default)
    with scratch_compiler_cache():
        default.mkdir()  # an empty folder (an import's) does not outlive the block
    assert not default.exists()
    with scratch_compiler_cache(compiling=True):
        header.parent.mkdir(parents=True)  # this block compiled: its headers go with it
        header.write_bytes(b"pch")
    assert not default.exists()
    header.parent.mkdir(parents=True)
    with scratch_compiler_cache(compiling=True):
        pass
    assert header.parent.exists()  # it was there before the block: not this block's to remove
