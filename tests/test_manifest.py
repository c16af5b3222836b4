from pathlib import Path

import pytest

from audioflow.config import DataConfig
from audioflow.manifest import Dataset, ManifestError, columns_for_folder, ingest
from tests.conftest import tone, write_wav


def test_manifest_with_groups(tone_dataset: Path, tmp_path: Path):
    ds = ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False)
    assert len(ds.files) == 36 and ds.labels == ["high", "low", "mid"]
    assert set(ds.files["group"]) == {f"s{i}" for i in range(6)}
    assert ds.files["sha256"].str.len().eq(64).all()
    ds.save(tmp_path / "out")
    again = Dataset.load(tmp_path / "out")
    assert again.fingerprint == ds.fingerprint
    assert again.files.equals(ds.files)


def test_fingerprint_tracks_content_only(tone_dataset: Path):
    cfg = DataConfig(root=str(tone_dataset), group_column="speaker")
    a = ingest(cfg, progress=False).fingerprint
    assert ingest(cfg, progress=False).fingerprint == a  # deterministic
    (tone_dataset / "low/s0_0.wav").touch()  # mtime only: no change
    assert ingest(cfg, progress=False).fingerprint == a
    write_wav(tone_dataset / "low/s0_0.wav", tone(310, 0.5, 8000, seed=99), 8000)
    assert ingest(cfg, progress=False).fingerprint != a


def test_class_folders_without_manifest(tmp_path: Path):
    for label in ("dog", "cat"):
        for k in range(2):
            write_wav(tmp_path / label / f"{k}.wav", tone(200 + k, 0.1, 8000), 8000)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = ingest(DataConfig(root=str(tmp_path)), progress=False)
    assert sorted(ds.files["path"]) == ["cat/0.wav", "cat/1.wav", "dog/0.wav", "dog/1.wav"]
    assert set(ds.files["group"]) == {""}


def test_class_folders_skip_what_is_hidden_inside_them(tmp_path: Path):
    """A folder copied from a Mac carries "._x.wav" companions (metadata, not audio); tools keep
    caches in hidden folders. Neither is a recording of the class around it."""
    for rel in ("dog/0.wav", "dog/sub/1.wav", "cat/0.wav", "cat/1.wav"):
        write_wav(tmp_path / rel, tone(220, 0.1, 8000), 8000)
    (tmp_path / "dog" / "._0.wav").write_bytes(b"\x00\x05\x16\x07 Mac OS X metadata")
    write_wav(tmp_path / "cat" / ".cache" / "2.wav", tone(330, 0.1, 8000), 8000)
    write_wav(tmp_path / ".trash" / "3.wav", tone(440, 0.1, 8000), 8000)
    ds = ingest(DataConfig(root=str(tmp_path)), progress=False)
    assert list(ds.files["path"]) == ["cat/0.wav", "cat/1.wav", "dog/0.wav", "dog/sub/1.wav"]
    assert list(ds.files["label"]) == ["cat", "cat", "dog", "dog"]


def test_missing_column_named(tone_dataset: Path):
    with pytest.raises(ManifestError, match="data.group_column='patient'"):
        ingest(DataConfig(root=str(tone_dataset), group_column="patient"), progress=False)


def problems_of(ds: Dataset) -> set[tuple[str, str, str]]:
    return {(p["path"], p["check"], p["reason"]) for p in ds.problems}


def test_missing_files_listed(tone_dataset: Path):
    (tone_dataset / "low/s1_0.wav").unlink()
    (tone_dataset / "mid/s2_1.wav").unlink()
    ds = ingest(DataConfig(root=str(tone_dataset)), progress=False)  # goes on: validation reports them
    assert problems_of(ds) == {("low/s1_0.wav", "missing", "file not found"),
                               ("mid/s2_1.wav", "missing", "file not found")}
    assert ds.listed == len(ds.files) + 2 and "low/s1_0.wav" not in set(ds.files["path"])


def test_bad_rows_reported_together(tmp_path: Path):
    for name in ("a.wav", "b.wav", "c.wav", "extra.wav", ".hidden/x.wav"):
        write_wav(tmp_path / name, tone(300, 0.1, 8000), 8000)
    (tmp_path / "manifest.csv").write_text("path,label\na.wav,\n,x\nb.wav,y\n./b.wav,y\nc.wav,y\nc.wav,z\n")
    ds = ingest(DataConfig(root=str(tmp_path)), progress=False)
    assert problems_of(ds) == {
        ("manifest.csv:2", "manifest_entry", "a.wav: empty label"),
        ("manifest.csv:3", "manifest_entry", "empty path"),
        ("manifest.csv:5", "listed_twice", "b.wav listed again (first on line 4)"),
        ("manifest.csv:7", "listed_twice", "c.wav listed again (first on line 6)"),
        ("c.wav", "listed_twice", "listed under two labels in manifest.csv: 'y' (line 6) and 'z' (line 7)"),
        ("a.wav", "unlisted", "audio file under the data root that manifest.csv does not list"),
        ("extra.wav", "unlisted", "audio file under the data root that manifest.csv does not list"),
    }
    assert ds.files["path"].tolist() == ["b.wav", "c.wav"] and ds.listed == 6
    saved = tmp_path / "saved"
    ds.save(saved)
    assert Dataset.load(saved).problems == ds.problems and Dataset.load(saved).listed == 6


def test_nothing_usable_listed_is_an_error_naming_every_line(tmp_path: Path):
    (tmp_path / "manifest.csv").write_text("path,label\na.wav,x\n,y\n")
    with pytest.raises(ManifestError) as e:
        ingest(DataConfig(root=str(tmp_path)), progress=False)
    assert "no usable recordings listed" in str(e.value) and "a.wav: file not found" in str(e.value)
    assert "manifest.csv:3: empty path" in str(e.value)


def test_empty_root(tmp_path: Path):
    with pytest.raises(ManifestError, match="no manifest.csv and no class folders"):
        ingest(DataConfig(root=str(tmp_path)), progress=False)
    with pytest.raises(ManifestError, match="does not exist"):
        ingest(DataConfig(root=str(tmp_path / "nope")), progress=False)


def test_paths_leaving_the_root_are_rejected_by_line(tmp_path: Path):
    write_wav(tmp_path / "ok.wav", tone(300, 0.1, 8000), 8000)
    (tmp_path / "manifest.csv").write_text(
        "path,label\nok.wav,a\n../outside.wav,a\n/etc/passwd,b\nC:/data/x.wav,b\nsub/../../up.wav,a\n")
    ds = ingest(DataConfig(root=str(tmp_path)), progress=False)
    reasons = {p["path"]: p["reason"] for p in ds.problems}
    for line, path in ((3, "../outside.wav"), (4, "/etc/passwd"), (5, "C:/data/x.wav"), (6, "sub/../../up.wav")):
        assert reasons[f"manifest.csv:{line}"].startswith(f"{path}: path leaves the data root")
    assert ds.files["path"].tolist() == ["ok.wav"]  # never opened, never hashed


def test_configured_group_without_manifest_is_an_error(tmp_path: Path):
    """The default manifest.csv is absent: class folders carry no patients, so say so."""
    for label in ("dog", "cat"):
        write_wav(tmp_path / label / "0.wav", tone(200, 0.1, 8000), 8000)
    with pytest.raises(ManifestError, match=r"no manifest.csv, so data.group_column='patient' cannot be read"):
        ingest(DataConfig(root=str(tmp_path), group_column="patient"), progress=False)
    with pytest.raises(ManifestError, match=r"data.fold_column='split'"):
        ingest(DataConfig(root=str(tmp_path), fold_column="split"), progress=False)


def test_folder_discovery_asked_for_warns_about_groups(tmp_path: Path):
    for label in ("dog", "cat"):
        write_wav(tmp_path / "d" / label / "0.wav", tone(200, 0.1, 8000), 8000)
    ds = ingest(DataConfig(root=str(tmp_path / "d"), manifest=None, group_column="patient"), progress=False)
    assert len(ds.warnings) == 1 and "data.group_column='patient' ignored" in ds.warnings[0]
    assert ds.n_groups == 0
    ds.save(tmp_path / "out")
    assert Dataset.load(tmp_path / "out").warnings == ds.warnings


def test_n_groups_counts_only_real_groups(tone_dataset: Path):
    assert ingest(DataConfig(root=str(tone_dataset)), progress=False).n_groups == 0
    assert ingest(DataConfig(root=str(tone_dataset), group_column="speaker"), progress=False).n_groups == 6


def test_columns_for_folder_uses_what_the_manifest_has(tone_dataset: Path, tmp_path: Path):
    cfg = DataConfig(root=str(tone_dataset), group_column="speaker", fold_column="split")
    adapted, notes = columns_for_folder(cfg)
    assert adapted.group_column == "speaker" and adapted.fold_column is None
    assert notes == ["data.fold_column='split': absent from manifest.csv, not used"]
    (tone_dataset / "manifest.csv").unlink()
    adapted, notes = columns_for_folder(cfg)
    assert (adapted.manifest, adapted.group_column, adapted.fold_column) == (None, None, None)
    assert len(notes) == 1 and "class folders, so data.group_column='speaker' and " in notes[0]
